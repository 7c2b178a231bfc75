//! The documents of a submission or an integration: those attached to the message (a
//! [`Contenuto`] in base64) must be exactly what their [`Documento`] declares — its size and
//! its SHA-256 —, the others are references the sender keeps. Every discrepancy is a reason
//! of refusal that names the file.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use snodo_schemas::services::dati::{Documento, Motivo};
use snodo_schemas::services::edilizia_permessi::Contenuto;

use crate::back_office::motivo;

/// A document whose content came attached and matched its description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allegato {
    /// Its description.
    pub documento: Documento,
    /// Its bytes.
    pub contenuto: Vec<u8>,
}

/// The SHA-256 of `bytes`, 64 lowercase hex digits.
#[must_use]
pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(snodo_envelopes::sha256(bytes))
}

/// Checks `contenuti` against the documents `documenti` declare: the attached documents when
/// all is in order, else every reason.
///
/// # Errors
/// The reasons: two documents of one name, content for no document or twice for one, content
/// that is not base64, or whose size or SHA-256 is not the declared one.
pub fn verifica(
    documenti: &[Documento],
    contenuti: &[Contenuto],
) -> Result<Vec<Allegato>, Vec<Motivo>> {
    let mut motivi = Vec::new();
    for (i, d) in documenti.iter().enumerate() {
        if documenti[..i].iter().any(|o| o.nome == d.nome) {
            motivi.push(motivo(
                "documento-doppio",
                format!("two documents are named {}", d.nome),
            ));
        }
    }
    let mut allegati = Vec::new();
    for (i, c) in contenuti.iter().enumerate() {
        if contenuti[..i].iter().any(|o| o.nome == c.nome) {
            motivi.push(motivo(
                "allegato-doppio",
                format!("{}: its content is attached twice", c.nome),
            ));
            continue;
        }
        let Some(d) = documenti.iter().find(|d| d.nome == c.nome) else {
            motivi.push(motivo(
                "allegato-sconosciuto",
                format!(
                    "{}: attached, but no document of that name is declared",
                    c.nome
                ),
            ));
            continue;
        };
        let bytes = match STANDARD.decode(&c.base64) {
            Ok(b) => b,
            Err(e) => {
                motivi.push(motivo(
                    "allegato-illeggibile",
                    format!("{}: the content is not base64 ({e})", c.nome),
                ));
                continue;
            }
        };
        if bytes.len() as u64 != d.dimensione {
            motivi.push(motivo(
                "allegato-dimensione",
                format!(
                    "{}: the content has {} bytes, the document declares {}",
                    c.nome,
                    bytes.len(),
                    d.dimensione
                ),
            ));
            continue;
        }
        let digest = sha256(&bytes);
        if digest != d.sha256 {
            motivi.push(motivo(
                "allegato-impronta",
                format!(
                    "{}: the SHA-256 of the content is {digest}, the document declares {}",
                    c.nome, d.sha256
                ),
            ));
            continue;
        }
        allegati.push(Allegato {
            documento: d.clone(),
            contenuto: bytes,
        });
    }
    if motivi.is_empty() {
        Ok(allegati)
    } else {
        Err(motivi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documento(nome: &str, bytes: &[u8]) -> Documento {
        Documento {
            tipo: "relazione tecnica".into(),
            nome: nome.into(),
            media_type: "application/pdf".into(),
            sha256: sha256(bytes),
            dimensione: bytes.len() as u64,
        }
    }

    fn contenuto(nome: &str, bytes: &[u8]) -> Contenuto {
        Contenuto {
            nome: nome.into(),
            base64: STANDARD.encode(bytes),
        }
    }

    #[test]
    fn attached_content_matching_its_digest_is_taken_and_references_pass() {
        let docs = [
            documento("relazione.pdf", b"%PDF-1.7 relazione"),
            documento("tavole.pdf", b"%PDF-1.7 tavole"),
        ];
        let a = verifica(&docs, &[contenuto("relazione.pdf", b"%PDF-1.7 relazione")]).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].contenuto, b"%PDF-1.7 relazione");
        assert_eq!(
            sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn content_that_is_not_its_document_is_refused_naming_the_file() {
        let docs = [documento("relazione.pdf", b"%PDF-1.7 relazione")];
        let m = verifica(&docs, &[contenuto("relazione.pdf", b"%PDF-1.7 relaziOne")]).unwrap_err();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].codice, "allegato-impronta");
        assert!(
            m[0].descrizione.starts_with("relazione.pdf: "),
            "{}",
            m[0].descrizione
        );
        let m = verifica(&docs, &[contenuto("relazione.pdf", b"short")]).unwrap_err();
        assert_eq!(m[0].codice, "allegato-dimensione");
        let m = verifica(
            &docs,
            &[Contenuto {
                nome: "relazione.pdf".into(),
                base64: "!!".into(),
            }],
        )
        .unwrap_err();
        assert_eq!(m[0].codice, "allegato-illeggibile");
        let m = verifica(&docs, &[contenuto("altro.pdf", b"x")]).unwrap_err();
        assert_eq!(m[0].codice, "allegato-sconosciuto");
        let m = verifica(
            &docs,
            &[
                contenuto("relazione.pdf", b"%PDF-1.7 relazione"),
                contenuto("relazione.pdf", b"%PDF-1.7 relazione"),
            ],
        )
        .unwrap_err();
        assert_eq!(m[0].codice, "allegato-doppio");
        let twice = [docs[0].clone(), docs[0].clone()];
        assert_eq!(
            verifica(&twice, &[]).unwrap_err()[0].codice,
            "documento-doppio"
        );
    }
}
