//! The comune's side of `anagrafe.variazioni`: its variations numbered in one sequence and kept,
//! so that a batch the registry misses is sent again; the full initial load of its registry.

use serde::{Deserialize, Serialize};
use snodo_schemas::formats::Elenco;
use snodo_schemas::services::anagrafe_variazioni::{
    CaricamentoEsito, CaricamentoIniziale, Lotto, LottoEsito, PosizioneAnagrafica,
    RichiestaReinvio, Variazione,
};

use super::Comune;
use crate::back_office::istante;
use crate::dispatch::HandlerError;
use crate::inbound::Inbound;
use crate::service::{Invio, Outcome, ServiceError, retry};

/// The most batches one resend request may ask for.
const MAX_REINVIO: u64 = 1000;

/// A batch as the comune keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LottoInviato {
    /// The batch.
    pub lotto: Lotto,
    /// How many times it was sent (0: prepared only).
    pub invii: u32,
}

fn chiave(seq: u64) -> String {
    format!("{seq:020}")
}

impl Comune {
    fn conversazione_feed(&self) -> String {
        format!("anagrafe.variazioni:{}", self.codice)
    }

    fn rifiuto(e: HandlerError) -> ServiceError {
        match e {
            HandlerError::Retry(m) => ServiceError::Unreachable(m),
            HandlerError::Reject(m) | HandlerError::Decline(m) => ServiceError::Refused(m),
        }
    }

    /// Numbers `variazioni` as the next batch and keeps it, without sending it (an
    /// extraction from the municipal system, sent by [`Comune::invia_lotto`]); returns its
    /// number.
    ///
    /// # Errors
    /// [`ServiceError::Refused`] for more than 10,000 variations; the store's errors.
    pub async fn prepara_lotto(&self, variazioni: Vec<Variazione>) -> Result<u64, ServiceError> {
        let (seq, o) = self.lotto_nuovo(variazioni, false)?;
        self.committer.commit(o).await?;
        Ok(seq)
    }

    /// Numbers `variazioni` as the next batch, keeps it and sends it; returns its number.
    ///
    /// # Errors
    /// As [`Comune::prepara_lotto`]; the hub's refusal.
    pub async fn nuovo_lotto(&self, variazioni: Vec<Variazione>) -> Result<u64, ServiceError> {
        let (seq, o) = self.lotto_nuovo(variazioni, true)?;
        self.committer.commit(o).await?;
        Ok(seq)
    }

    fn lotto_nuovo(
        &self,
        variazioni: Vec<Variazione>,
        invia: bool,
    ) -> Result<(u64, Outcome), ServiceError> {
        let n = variazioni.len();
        let variazioni = Elenco::new(variazioni).ok_or_else(|| {
            ServiceError::Refused(format!("{n} variations: a batch holds at most 10000"))
        })?;
        let seq = self
            .contatori
            .update("lotto", |v| Some(v.unwrap_or(0) + 1))?
            .unwrap_or(1);
        let lotto = Lotto {
            comune: self.codice.clone(),
            sequenza: seq,
            estratto_il: istante(self.clock.now()).map_err(Self::rifiuto)?,
            variazioni,
        };
        let mut o = Outcome::new();
        if invia {
            o.send(Invio::new(&self.anpr, &self.conversazione_feed(), &lotto)?);
        }
        o.update.put(
            &self.lotti,
            &chiave(seq),
            &LottoInviato {
                lotto,
                invii: u32::from(invia),
            },
        )?;
        Ok((seq, o))
    }

    /// Sends the kept batch `seq` (again).
    ///
    /// # Errors
    /// [`ServiceError::Refused`] for a batch never numbered; the hub's refusal.
    pub async fn invia_lotto(&self, seq: u64) -> Result<(), ServiceError> {
        let mut o = Outcome::new();
        self.reinvia(seq, &mut o).map_err(Self::rifiuto)?;
        self.committer.commit(o).await.map(|_| ())
    }

    fn reinvia(&self, seq: u64, o: &mut Outcome) -> Result<(), HandlerError> {
        let Some(mut kept) = self.lotti.get(&chiave(seq)).map_err(retry)? else {
            return Err(HandlerError::Reject(format!(
                "batch {seq} of comune {} was never numbered",
                self.codice
            )));
        };
        o.send(Invio::new(
            &self.anpr,
            &self.conversazione_feed(),
            &kept.lotto,
        )?);
        kept.invii = kept.invii.saturating_add(1);
        o.update
            .put(&self.lotti, &chiave(seq), &kept)
            .map_err(retry)
    }

    /// Sends the whole registry (residents, not emigrants) as a full load in parts of at
    /// most `per_parte` positions; the batches that follow continue the sequence. Returns
    /// the number of parts.
    ///
    /// # Errors
    /// The store's or the hub's.
    pub async fn caricamento_iniziale(&self, per_parte: usize) -> Result<u32, ServiceError> {
        let posizioni: Vec<PosizioneAnagrafica> = self
            .residenti
            .scan("")?
            .into_iter()
            .filter(|(_, r)| r.emigrato.is_none())
            .map(|(_, r)| PosizioneAnagrafica {
                persona: r.persona,
                indirizzo: r.indirizzo,
                famiglia: r.famiglia,
                iscritto_dal: r.dal,
            })
            .collect();
        let chunks: Vec<Vec<PosizioneAnagrafica>> = if posizioni.is_empty() {
            vec![Vec::new()]
        } else {
            posizioni
                .chunks(per_parte.clamp(1, 10_000))
                .map(<[PosizioneAnagrafica]>::to_vec)
                .collect()
        };
        let parti = u32::try_from(chunks.len())
            .map_err(|_| ServiceError::Refused("too many parts".into()))?;
        let prossima = self.contatori.get("lotto")?.unwrap_or(0) + 1;
        let al = istante(self.clock.now()).map_err(Self::rifiuto)?;
        let mut o = Outcome::new();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let n = chunk.len();
            o.send(Invio::new(
                &self.anpr,
                &self.conversazione_feed(),
                &CaricamentoIniziale {
                    comune: self.codice.clone(),
                    al: al.clone(),
                    parte: u32::try_from(i + 1).unwrap_or(parti),
                    parti,
                    prossima_sequenza: prossima,
                    posizioni: Elenco::new(chunk).ok_or_else(|| {
                        ServiceError::Refused(format!("{n} positions in one part"))
                    })?,
                },
            )?);
        }
        self.committer.commit(o).await?;
        Ok(parti)
    }

    /// The registry's answer to batch `seq`, if it came.
    ///
    /// # Errors
    /// The store's.
    pub fn esito_lotto(&self, seq: u64) -> Result<Option<LottoEsito>, ServiceError> {
        Ok(self.esiti_lotti.get(&chiave(seq))?)
    }

    /// The kept batch `seq`.
    ///
    /// # Errors
    /// The store's.
    pub fn lotto(&self, seq: u64) -> Result<Option<LottoInviato>, ServiceError> {
        Ok(self.lotti.get(&chiave(seq))?)
    }

    /// The registry's answer to part `parte` of the initial load, if it came.
    ///
    /// # Errors
    /// The store's.
    pub fn esito_caricamento(&self, parte: u32) -> Result<Option<CaricamentoEsito>, ServiceError> {
        Ok(self.esiti_caricamento.get(&parte.to_string())?)
    }
}

impl crate::anagrafe_variazioni::Mittente for Comune {
    fn lotto_esito(&self, _m: &Inbound, e: LottoEsito) -> crate::residenza_cambio::Result {
        if e.comune != self.codice {
            return Err(HandlerError::Reject(format!(
                "an answer about comune {}'s batch {}, not this comune's",
                e.comune, e.sequenza
            )));
        }
        let mut o = Outcome::new();
        o.update
            .put(&self.esiti_lotti, &chiave(e.sequenza), &e)
            .map_err(retry)?;
        Ok(o)
    }

    fn richiesta_reinvio(
        &self,
        _m: &Inbound,
        r: RichiestaReinvio,
    ) -> crate::residenza_cambio::Result {
        if r.comune != self.codice {
            return Err(HandlerError::Reject(format!(
                "a resend request for comune {}, not this one",
                r.comune
            )));
        }
        if r.a.saturating_sub(r.da) >= MAX_REINVIO {
            return Err(HandlerError::Reject(format!(
                "a resend of batches {}–{}: at most {MAX_REINVIO} at a time",
                r.da, r.a
            )));
        }
        let mut o = Outcome::new();
        for seq in r.da..=r.a {
            self.reinvia(seq, &mut o)?;
        }
        tracing::info!(
            da = r.da,
            a = r.a,
            "Batches sent again at the registry's request."
        );
        Ok(o)
    }

    fn caricamento_esito(
        &self,
        _m: &Inbound,
        e: CaricamentoEsito,
    ) -> crate::residenza_cambio::Result {
        let mut o = Outcome::new();
        o.update
            .put(&self.esiti_caricamento, &e.parte.to_string(), &e)
            .map_err(retry)?;
        Ok(o)
    }
}
