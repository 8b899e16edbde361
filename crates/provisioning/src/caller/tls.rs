//! The TLS settings of HTTPS calls: the public certificate authorities and the operator's
//! `handler_ca_file`, whose certificates may also be the endpoints' own.
//!
//! Why more than a root store: a certificate made for one endpoint and signed by itself
//! is, as `openssl req -x509` makes it by default, marked as a CA, and webpki refuses a
//! CA as the certificate of the endpoint itself ("CaUsedAsEndEntity"): the file the
//! README describes for a self-signed endpoint failed every call. A certificate of the
//! file presented as it is by an endpoint, and refused for that reason only, is trusted
//! for the names it holds.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// A client configuration trusting the public CAs (Mozilla's, as reqwest does),
/// `extra` as CAs, and each of `extra` as the certificate of an endpoint.
pub(super) fn client_config(
    extra: &[CertificateDer<'static>],
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots =
        rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for root in extra {
        roots
            .add(root.clone())
            .map_err(|e| format!("a handler CA certificate: {e}"))?;
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let verifier = AlsoPinned {
        webpki,
        pinned: extra.to_vec(),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// webpki's verification, and besides it the operator's certificates as endpoints'.
#[derive(Debug)]
struct AlsoPinned {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

/// Whether webpki refused a certificate for being a CA's, used as an endpoint's.
fn is_ca_as_end_entity(e: &rustls::Error) -> bool {
    match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => matches!(
            other.0.downcast_ref::<webpki::Error>(),
            Some(webpki::Error::CaUsedAsEndEntity)
        ),
        _ => false,
    }
}

impl ServerCertVerifier for AlsoPinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let refused = match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => return Ok(verified),
            Err(e) => e,
        };
        let pinned = self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref());
        if !pinned || !is_ca_as_end_entity(&refused) {
            return Err(refused);
        }
        // The operator's own file holds this very certificate: trusted as it is, for the
        // names in it. webpki refuses a CA as an end entity after checking its validity
        // period, so an expired one is refused as such. The handshake's signature,
        // checked below as for any certificate, proves the endpoint holds its key.
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_name(&parsed, server_name)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_without_a_process_wide_provider() {
        // Its provider is given, not the process default (none is installed here).
        assert!(client_config(&[]).is_ok());
    }
}
