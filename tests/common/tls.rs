//! A certificate authority made for one test run, and certificates from it
//! for `localhost` and `127.0.0.1`, so federation tests run real TLS with
//! real verification on loopback.

use std::{path::PathBuf, sync::OnceLock};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    /// The CA shared by every server of this test binary.
    pub fn get() -> &'static TestCa {
        static CA: OnceLock<TestCa> = OnceLock::new();
        CA.get_or_init(TestCa::create)
    }

    fn create() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Corvid test CA");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(params, ca_key).expect("CA certificate");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();

        let leaf_names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = CertificateParams::new(leaf_names)
            .expect("leaf params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf certificate");
        std::fs::write(dir.path().join("server.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), leaf_key.serialize_pem()).unwrap();
        Self { dir }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn certificate(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    pub fn private_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// The rustls client configuration the servers use, trusting this CA.
    pub fn client_config(&self) -> rustls::ClientConfig {
        let ca = [self.ca_file()];
        corvid_federation::tls::client_config(corvid_federation::tls::OutboundTls::Verified {
            extra_ca_files: &ca,
        })
        .expect("client TLS config")
    }

    /// An HTTP client for the test that trusts this CA.
    pub fn http_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .use_preconfigured_tls(self.client_config())
            .build()
            .expect("https client")
    }
}
