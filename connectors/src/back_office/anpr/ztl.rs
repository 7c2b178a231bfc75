//! ANPR's answers in `mobilita.ztl`: where a person lives on a given day, for a comune's ZTL
//! office checking a resident's permit.

use std::sync::Arc;

use snodo_schemas::formats::Data;
use snodo_schemas::services::dati::Indirizzo;
use snodo_schemas::services::mobilita_ztl::{VerificaResidenza, VerificaResidenzaEsito};

use super::{Anpr, comune_di};
use crate::dispatch::{DispatcherBuilder, HandlerError};
use crate::inbound::Inbound;
use crate::service::{self, Invio, Outcome, retry};
use crate::store::StoreError;

impl Anpr {
    /// Routes the ZTL offices' residence checks on `builder`.
    pub(super) fn install_ztl(self: &Arc<Self>, builder: DispatcherBuilder) -> DispatcherBuilder {
        let me = self.clone();
        let client = self.committer.client().clone();
        service::route::<VerificaResidenza>(builder, &client, None, move |m, q| {
            me.verifica_residenza(m, q)
        })
    }

    /// The address `cf` lived at on `il`: none when the registry holds no position for them,
    /// their position has ended, or it started later (earlier positions are not kept).
    ///
    /// # Errors
    /// The store's.
    pub fn residenza_al(&self, cf: &str, il: Data) -> Result<Option<Indirizzo>, StoreError> {
        Ok(self
            .posizioni
            .get(cf)?
            .filter(|p| p.cessata.is_none() && p.dal <= il)
            .and_then(|p| p.indirizzo))
    }

    fn verifica_residenza(
        &self,
        m: &Inbound,
        q: VerificaResidenza,
    ) -> Result<Outcome, HandlerError> {
        if comune_di(m).is_none() {
            return Err(HandlerError::Reject(format!(
                "a residence check from {}: only comuni ask them",
                m.sender()
            )));
        }
        let residenza = self
            .residenza_al(q.codice_fiscale.as_str(), q.alla_data)
            .map_err(retry)?;
        let esito = VerificaResidenzaEsito {
            pratica: q.pratica,
            codice_fiscale: q.codice_fiscale,
            residenza,
        };
        let mut o = Outcome::new();
        o.send(Invio::new(m.sender(), &m.envelope.header.conversation, &esito)?.reply_to(m.id()));
        Ok(o)
    }
}
