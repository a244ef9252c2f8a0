# meshwatch_kafka: fluent-plugin-kafka's rdkafka_group input (librdkafka: every
# Kafka compression codec), with offsets stored for commit only after their
# batch was emitted into Fluentd's buffer.
#
# Why: rdkafka_group leaves librdkafka's enable.auto.offset.store on, so an
# offset is stored as soon as poll() returns the message and auto-committed
# within auto.commit.interval.ms, while the batch it belongs to is still being
# collected (in_rdkafka_group.rb, each_batch: "we might lose at most
# :max_batch_size messages"); a close() commits them too. Here the config must
# turn enable.auto.offset.store off, and each batch's offsets are stored after
# the batch was emitted: a Fluentd that dies mid-batch reads that batch again
# (at least once), and the repeat is a 409 on the record's event.id.
require 'fluent/plugin/in_rdkafka_group'

module Fluent
  module Plugin
    class MeshwatchKafkaInput < RdKafkaGroupInput
      Fluent::Plugin.register_input('meshwatch_kafka', self)

      def configure(conf)
        super
        store = @kafka_configs['enable.auto.offset.store']
        unless store.to_s == 'false'
          raise Fluent::ConfigError,
                'meshwatch_kafka stores offsets after emitting: set "enable.auto.offset.store": false in kafka_configs'
        end
      end

      # The parent's batches, each followed by storing its offsets once the
      # block (which emits the batch) has returned.
      def each_batch
        super do |batch|
          yield batch
          store_offsets(batch.messages)
        end
      end

      private

      # Stores the next offset to read for each partition of the batch (one
      # topic per batch); librdkafka commits stored offsets in the background
      # (enable.auto.commit) and on close.
      def store_offsets(messages)
        consumer = @consumer
        return unless consumer

        last = {}
        messages.each { |message| last[message.partition] = message }
        last.each_value do |message|
          consumer.store_offset(message)
        rescue Rdkafka::BaseError => e
          # The partition was revoked by a rebalance, or the consumer is
          # closing: whoever reads the partition next starts from the last
          # commit, so these records are read again, never lost.
          log.warn 'offset not stored; the batch will be read again',
                   topic: message.topic, partition: message.partition,
                   offset: message.offset, error: e.to_s
        end
      end
    end
  end
end
