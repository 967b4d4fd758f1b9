//! Certificates made in the test with rcgen: a CA of the test's own and
//! server certificates it signs for `127.0.0.1` and `localhost`.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};

pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate, as a client is given it.
    pub pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let pem = params.self_signed(&key).expect("self-signed CA").pem();
        TestCa {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A server certificate for 127.0.0.1 and localhost, and its key, as PEM.
    pub fn server_pair(&self) -> (String, String) {
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let mut params = CertificateParams::new(names).expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "deployd test server");
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }

    /// Write a fresh server pair as `dir/cert.pem` and `dir/key.pem`, each
    /// replaced whole (a rename), and answer their paths.
    pub fn write_server_pair(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = self.server_pair();
        let paths = (dir.join("cert.pem"), dir.join("key.pem"));
        replace(&paths.0, &cert);
        replace(&paths.1, &key);
        paths
    }

    /// The CA's certificate in a file, for `deployctl --ca-cert`.
    pub fn write_pem(&self, path: &Path) -> PathBuf {
        std::fs::write(path, &self.pem).expect("write the CA certificate");
        path.to_owned()
    }
}

/// Replace `path` with `text` in one rename, as a certificate tool would.
pub fn replace(path: &Path, text: &str) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, text).expect("write a certificate file");
    std::fs::rename(&temporary, path).expect("rename it into place");
}
