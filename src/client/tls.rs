//! What a failed TLS handshake means to the user: rustls's error found in
//! reqwest's, and said with what to do about it.

/// The TLS error behind a failed request, if that is what failed. rustls's
/// error travels inside `io::Error`s, whose `source()` skips what they wrap.
pub(super) fn cause<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let wrapped = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
        cause = match wrapped {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    None
}

/// What went wrong in words a user can act on.
pub(super) fn advice(error: &rustls::Error) -> String {
    use rustls::CertificateError as Cert;
    use rustls::Error as Tls;
    match error {
        Tls::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. }) => {
            format!("the server's certificate has expired ({error})")
        }
        Tls::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
            format!(
                "the server's certificate is not for this host name ({error}); \
                 use a name it was issued for in the server URL"
            )
        }
        Tls::InvalidCertificate(_) => format!(
            "the server's certificate is not trusted ({error}); if your own CA signed it, \
             pass that CA's certificate with --ca-cert FILE or DEPLOYD_CA_CERT=FILE"
        ),
        Tls::InvalidMessage(_) | Tls::InappropriateMessage { .. } => format!(
            "the server does not answer TLS ({error}); is its URL http:// rather than https://?"
        ),
        _ => error.to_string(),
    }
}
