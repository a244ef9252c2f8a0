//! TLS for meshwatch's gRPC servers and clients: the `--tls-*` flags
//! ([`TlsArgs`]) read and checked at start-up into tonic's rustls
//! configuration, so a missing file, a key without a certificate or a PEM
//! that does not parse is a usage error naming the flag, not a failure at the
//! first connection.
#![forbid(unsafe_code)]

use std::path::Path;

use meshwatch_entry::{ConfigError, TlsArgs};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

/// Loaded TLS material. `None` of the whole thing (see [`Tls::load`]) means
/// plaintext, the default for the local mesh.
#[derive(Clone, Debug)]
pub struct Tls {
    identity: Option<Identity>,
    ca: Option<Certificate>,
    client_auth: bool,
}

impl Tls {
    /// Reads and checks the files named by `args`. `Ok(None)` when no TLS
    /// flag is given.
    pub fn load(args: &TlsArgs) -> Result<Option<Self>, ConfigError> {
        if args.cert.is_none() && args.key.is_none() && args.ca.is_none() && !args.client_auth {
            return Ok(None);
        }
        let identity = match (&args.cert, &args.key) {
            (Some(cert), Some(key)) => Some(Identity::from_pem(
                read_pem("tls-cert", cert, "CERTIFICATE")?,
                read_pem("tls-key", key, "PRIVATE KEY")?,
            )),
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "tls-key",
                    "--tls-cert needs its key: give --tls-key",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "tls-cert",
                    "--tls-key needs its certificate: give --tls-cert",
                ))
            }
            (None, None) => None,
        };
        let ca = match &args.ca {
            Some(path) => Some(Certificate::from_pem(read_pem(
                "tls-ca",
                path,
                "CERTIFICATE",
            )?)),
            None => None,
        };
        if args.client_auth && (ca.is_none() || identity.is_none()) {
            return Err(ConfigError::new(
                "tls-client-auth",
                "mutual TLS needs --tls-ca (to check clients) and --tls-cert/--tls-key (to serve TLS)",
            ));
        }
        let tls = Self {
            identity,
            ca,
            client_auth: args.client_auth,
        };
        // Let rustls parse everything now: a bad PEM is a usage error here.
        if let Some(server) = tls.server_config() {
            Server::builder().tls_config(server).map_err(|e| {
                ConfigError::new(
                    "tls-cert",
                    format!("unusable certificate or key: {}", source_text(&e)),
                )
            })?;
        }
        if tls.ca.is_some() {
            Endpoint::from_static("https://localhost")
                .tls_config(tls.client_config("localhost"))
                .map_err(|e| {
                    ConfigError::new("tls-ca", format!("unusable CA bundle: {}", source_text(&e)))
                })?;
        }
        Ok(Some(tls))
    }

    /// The server side: `None` when no certificate was given (the server
    /// then speaks plaintext even if a CA is set for its clients).
    pub fn server_config(&self) -> Option<ServerTlsConfig> {
        let identity = self.identity.clone()?;
        let mut config = ServerTlsConfig::new().identity(identity);
        if self.client_auth {
            if let Some(ca) = &self.ca {
                config = config.client_ca_root(ca.clone());
            }
        }
        Some(config)
    }

    /// The client side for a server named `domain` (checked against its
    /// certificate): trusts --tls-ca, presents --tls-cert when given.
    pub fn client_config(&self, domain: &str) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().domain_name(domain);
        if let Some(ca) = &self.ca {
            config = config.ca_certificate(ca.clone());
        }
        if let Some(identity) = &self.identity {
            config = config.identity(identity.clone());
        }
        config
    }

    /// True when a CA was given, i.e. this binary can call https:// peers.
    pub fn can_call_tls(&self) -> bool {
        self.ca.is_some()
    }
}

/// `endpoint` for `url`, over TLS when the URL is `https://` (which then
/// needs `--tls-ca`), plaintext for `http://`. `flag` names the address flag
/// in errors.
pub fn endpoint(flag: &str, url: &str, tls: Option<&Tls>) -> Result<Endpoint, ConfigError> {
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| {
        ConfigError::new(
            flag,
            format!("{url:?} is not a valid URL (e.g. http://127.0.0.1:50052): {e}"),
        )
    })?;
    if !url.starts_with("https://") {
        return Ok(endpoint);
    }
    let tls = tls.filter(|t| t.can_call_tls()).ok_or_else(|| {
        ConfigError::new(
            flag,
            format!("{url} is https: give --tls-ca, the CA that signed its certificate"),
        )
    })?;
    let host = endpoint.uri().host().unwrap_or_default().to_owned();
    endpoint
        .tls_config(tls.client_config(&host))
        .map_err(|e| ConfigError::new(flag, format!("TLS for {url}: {}", source_text(&e))))
}

fn read_pem(flag: &str, path: &Path, label: &str) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigError::new(flag, format!("cannot read {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    if !text.contains("-----BEGIN") || !text.contains(label) {
        return Err(ConfigError::new(
            flag,
            format!("{} is not a PEM file with a {label}", path.display()),
        ));
    }
    Ok(bytes)
}

/// The innermost cause, which says what rustls disliked.
fn source_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct Files {
        _dir: tempfile::TempDir,
        cert: PathBuf,
        key: PathBuf,
        ca: PathBuf,
    }

    fn files() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let write = |name: &str, text: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        Files {
            cert: write("cert.pem", cert.pem()),
            key: write("key.pem", key.serialize_pem()),
            ca: write("ca.pem", cert.pem()),
            _dir: dir,
        }
    }

    #[test]
    fn no_flags_is_plaintext() {
        assert!(Tls::load(&TlsArgs::default()).unwrap().is_none());
    }

    #[test]
    fn good_files_load_for_both_sides() {
        let f = files();
        let tls = Tls::load(&TlsArgs {
            cert: Some(f.cert.clone()),
            key: Some(f.key.clone()),
            ca: Some(f.ca.clone()),
            client_auth: true,
        })
        .unwrap()
        .unwrap();
        assert!(tls.server_config().is_some());
        assert!(endpoint("inventory-addr", "https://localhost:1", Some(&tls)).is_ok());
    }

    #[test]
    fn mistakes_name_the_flag() {
        let f = files();
        let err = |args: TlsArgs| Tls::load(&args).unwrap_err().flag;
        assert_eq!(
            err(TlsArgs {
                cert: Some(f.cert.clone()),
                ..TlsArgs::default()
            }),
            "tls-key"
        );
        assert_eq!(
            err(TlsArgs {
                key: Some(f.key.clone()),
                ..TlsArgs::default()
            }),
            "tls-cert"
        );
        assert_eq!(
            err(TlsArgs {
                cert: Some(f.key.clone()),
                key: Some(f.key.clone()),
                ..TlsArgs::default()
            }),
            "tls-cert"
        );
        assert_eq!(
            err(TlsArgs {
                ca: Some(PathBuf::from("/nonexistent/ca.pem")),
                ..TlsArgs::default()
            }),
            "tls-ca"
        );
        assert_eq!(
            err(TlsArgs {
                ca: Some(f.ca.clone()),
                client_auth: true,
                ..TlsArgs::default()
            }),
            "tls-client-auth"
        );
        // A key file that is PEM but garbage inside: rustls refuses it now.
        let bad = f.key.with_file_name("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        assert_eq!(
            err(TlsArgs {
                cert: Some(f.cert.clone()),
                key: Some(bad),
                ..TlsArgs::default()
            }),
            "tls-cert"
        );
    }

    #[test]
    fn https_needs_a_ca_and_http_stays_plaintext() {
        let e = endpoint("payment-addr", "https://payment:50053", None).unwrap_err();
        assert_eq!(e.flag, "payment-addr");
        assert!(e.reason.contains("--tls-ca"), "{e}");
        assert!(endpoint("payment-addr", "http://payment:50053", None).is_ok());
        assert_eq!(
            endpoint("payment-addr", "http://bad host", None)
                .unwrap_err()
                .flag,
            "payment-addr"
        );
    }
}
