# Exits 1 unless librdkafka, as the rdkafka gem built it, supports every Kafka
# compression codec named on the command line. The image build runs it, so an
# image whose consumer could not decode a codec never builds.
#
# librdkafka rejects `compression.codec` values it was built without ("zlib
# not available at build time", "libzstd not available at build time":
# src/rdkafka_conf.c); the same build switches (WITH_ZLIB, WITH_ZSTD) decide
# whether a fetched batch can be decompressed.
require 'rdkafka'

codecs = ARGV
abort 'usage: meshwatch-check-codecs CODEC...' if codecs.empty?

missing = codecs.reject do |codec|
  producer = Rdkafka::Config.new(
    'bootstrap.servers' => '127.0.0.1:9',
    'compression.codec' => codec
  ).producer
  producer.close
  true
rescue Rdkafka::Config::ConfigError => e
  warn "#{codec}: #{e.message}"
  false
end

unless missing.empty?
  abort "librdkafka #{Rdkafka::LIBRDKAFKA_VERSION} cannot decode: #{missing.join(' ')}"
end
puts "librdkafka #{Rdkafka::LIBRDKAFKA_VERSION} decodes: #{codecs.join(' ')}"
