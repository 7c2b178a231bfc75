//! Property tax and payments end to end over a real hub on 127.0.0.1 (real TLS, signed
//! envelopes, bodies checked against the catalog): the comune's tax office, the payment
//! provider and the portal as reference back offices, each with its own store and pull loop,
//! on one `ManualClock`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use snodo_broker::cli::serve::Running;
use snodo_connectors::clock::SharedClock;
use snodo_connectors::dispatch::PullConfig;
use snodo_connectors::mail::MailConfig;
use snodo_connectors::pagamenti::{Creditore, Impostazioni as NodoImpostazioni, Nodo};
use snodo_connectors::tributi::calcolo::Aliquote;
use snodo_connectors::tributi::portale::{Notifica, Portale};
use snodo_connectors::tributi::ufficio::{AliquoteAnno, Impostazioni, Ufficio};
use snodo_connectors::{Dispatcher, HubClient, HubClientConfig, ManualClock, Store};
use snodo_envelopes::{EntityId, Recipient};
use snodo_schemas::formats::{
    CodiceBelfiore, CodiceFiscale, CodiceIstat, Data, Importo, Istante, Nav, PuntiBase,
};
use snodo_schemas::services::dati::{Catasto, Motivo, RiferimentoCatastale};
use snodo_schemas::services::pagamenti::{
    Canale, ErroreAvviso, EsitoAttivazione, EsitoRegistrato, EsitoVerifica, Risultato,
    StatoPosizione,
};
use snodo_schemas::services::tributi_imu::{
    CalcoloEsito, CalcoloRichiesta, Categoria, Immobile, ImmobileCalcolo, Posizione,
    PosizioneRichiesta, Rata, Segnalazione, SegnalazioneEsito, TipoVariazione, Variazione,
    VariazioneEsito,
};
use time::macros::datetime;
use tokio::sync::watch;

const TURIN: &str = "comune:001272";
const PORTAL: &str = "portale:comunefacile";
const NODO: &str = "pagopa:nodo";
const PREFECTURE: &str = "prefettura:TO";
const CF: &str = "RSSMRA85T10A562S";
const TURIN_CF: &str = "00514490010";

const REGISTRY: &str = include_str!("../examples/tributi/hub-services.toml");

/// A federation of three: the hub, and the tax office, the provider and the portal running.
struct Federation {
    dir: tempfile::TempDir,
    hub: Running,
    clock: Arc<ManualClock>,
    nodo: Arc<Nodo>,
    ufficio: Arc<Ufficio>,
    portale: Arc<Portale>,
    stop: watch::Sender<bool>,
}

fn cf(s: &str) -> CodiceFiscale {
    CodiceFiscale::parse(s).unwrap()
}

fn bp(v: u16) -> PuntiBase {
    PuntiBase::new(v).unwrap()
}

fn data(s: &str) -> Data {
    Data::parse(s).unwrap()
}

fn building(cat: &str, rendita_euro: u64, principale: bool, particella: &str) -> Immobile {
    Immobile {
        catasto: RiferimentoCatastale {
            comune: CodiceBelfiore::parse("L219").unwrap(),
            catasto: Catasto::Fabbricati,
            sezione: None,
            foglio: "12".into(),
            particella: particella.into(),
            subalterno: Some("6".into()),
        },
        categoria: Some(Categoria(cat.into())),
        rendita: Importo::euro(rendita_euro).unwrap(),
        quota: PuntiBase::TUTTO,
        abitazione_principale: principale,
        riduzione: None,
    }
}

fn istante(s: &str) -> Istante {
    Istante::parse(s).unwrap()
}

impl Federation {
    async fn start() -> Federation {
        let dir = tempfile::tempdir().unwrap();
        // The payments' registry names the prefectures too (creditors of fines' injunctions).
        let (hub, url) =
            common::service_hub(dir.path(), &[TURIN, PORTAL, NODO, PREFECTURE], REGISTRY).await;
        let client = |entity: &str| common::service_client(dir.path(), &url, entity);
        let clock = Arc::new(ManualClock::new(datetime!(2026-03-02 09:00 UTC)));
        let shared: SharedClock = clock.clone();
        let (stop, shutdown) = watch::channel(false);
        let pull = PullConfig {
            batch: 16,
            lease: Duration::from_secs(30),
            idle: Duration::from_millis(50),
        };

        let store = Store::open(&dir.path().join("nodo")).unwrap();
        let c = client(NODO);
        let nodo = Nodo::open(
            c.clone(),
            store.clone(),
            shared.clone(),
            NodoImpostazioni {
                creditori: vec![Creditore {
                    entity: TURIN.parse().unwrap(),
                    codice_fiscale: cf(TURIN_CF),
                    denominazione: "Comune di Torino".into(),
                    segregazione: 1,
                }],
                token_secondi: 30 * 60,
                token_sportello_secondi: 3 * 24 * 3600,
            },
        )
        .unwrap();
        let d = Arc::new(nodo.install(Dispatcher::builder()).build(c, store).unwrap());
        tokio::spawn(d.run_pull(pull, shutdown.clone()));
        tokio::spawn(nodo.clone().run(shutdown.clone()));

        let store = Store::open(&dir.path().join("comune")).unwrap();
        let c = client(TURIN);
        let rates = |o, p| Aliquote {
            ordinaria: bp(o),
            abitazione_principale: bp(p),
            terreni: bp(76),
            detrazione: Importo::euro(200).unwrap(),
        };
        let ufficio = Ufficio::open(
            c.clone(),
            store.clone(),
            shared.clone(),
            Impostazioni {
                comune: CodiceIstat::parse("001272").unwrap(),
                denominazione: "Comune di Torino".into(),
                codice_fiscale: cf(TURIN_CF),
                iban: "IT60X0542811101000000123456".into(),
                nodo: NODO.parse().unwrap(),
                portale: PORTAL.parse().unwrap(),
                email_ufficio: "tributi@comune.torino.it".into(),
                posta: MailConfig {
                    from: "Ufficio tributi <tributi@comune.torino.it>".into(),
                    smtp: None,
                    directory: Some(dir.path().join("mail")),
                },
                aliquote: vec![
                    AliquoteAnno {
                        anno: 2025,
                        aliquote: rates(86, 60),
                    },
                    AliquoteAnno {
                        anno: 2026,
                        aliquote: rates(86, 60),
                    },
                ],
            },
        )
        .unwrap();
        let d = Arc::new(
            ufficio
                .install(Dispatcher::builder())
                .build(c, store)
                .unwrap(),
        );
        tokio::spawn(d.run_pull(pull, shutdown.clone()));

        let store = Store::open(&dir.path().join("portale")).unwrap();
        let c = client(PORTAL);
        let portale = Portale::open(c.clone(), store.clone(), NODO.parse().unwrap()).unwrap();
        let d = Arc::new(
            portale
                .install(Dispatcher::builder())
                .build(c, store)
                .unwrap(),
        );
        tokio::spawn(d.run_pull(pull, shutdown.clone()));

        Federation {
            dir,
            hub,
            clock,
            nodo,
            ufficio,
            portale,
            stop,
        }
    }

    fn turin() -> EntityId {
        TURIN.parse().unwrap()
    }

    async fn calcola(&self, anno: u16, immobili: Vec<ImmobileCalcolo>) -> CalcoloEsito {
        self.portale
            .al_comune::<CalcoloRichiesta, CalcoloEsito>(
                &Federation::turin(),
                &CalcoloRichiesta {
                    pratica: uuid::Uuid::now_v7().to_string(),
                    contribuente: cf(CF),
                    comune: CodiceIstat::parse("001272").unwrap(),
                    anno,
                    immobili,
                },
            )
            .await
            .unwrap()
    }

    async fn posizione(&self, anno: u16) -> Posizione {
        self.portale
            .al_comune::<PosizioneRichiesta, Posizione>(
                &Federation::turin(),
                &PosizioneRichiesta {
                    contribuente: cf(CF),
                    comune: CodiceIstat::parse("001272").unwrap(),
                    anno,
                },
            )
            .await
            .unwrap()
    }

    /// The notice `nav` as the portal holds it, once it arrived.
    async fn notifica(&self, nav: &Nav) -> Notifica {
        for _ in 0..200 {
            if let Some(n) = self
                .portale
                .notifiche(&cf(CF))
                .unwrap()
                .into_iter()
                .find(|n| n.nav() == nav)
            {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("notice {nav} never reached the portal");
    }

    /// Waits until the tax office's notice `iupd` is paid (the receipt came).
    async fn chiuso(&self, iupd: &str) {
        for _ in 0..200 {
            if self
                .ufficio
                .avviso(iupd)
                .unwrap()
                .is_some_and(|a| a.versamento.is_some())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("notice {iupd} never closed");
    }

    /// Activates `nav` by `canale` and returns the token.
    async fn attiva(
        &self,
        nav: &Nav,
        importo: Importo,
        canale: Canale,
    ) -> Result<String, ErroreAvviso> {
        let a = self
            .portale
            .attiva(&cf(TURIN_CF), nav, importo, canale)
            .await
            .unwrap();
        match a.esito {
            EsitoAttivazione::Attivato(x) => Ok(x.token),
            EsitoAttivazione::Errore { errore } => Err(errore),
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        self.hub.shutdown().await.unwrap();
        drop(self.dir);
    }
}

fn iupd_of(ufficio: &Ufficio, nav: &Nav) -> String {
    ufficio
        .avvisi()
        .unwrap()
        .into_iter()
        .find(|(_, a)| a.nav.as_ref() == Some(nav))
        .map(|(k, _)| k)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calculate_notify_pay_by_card_receipt_and_the_position_closes() {
    let f = Federation::start().await;
    // DOMAIN.md's worked example is the tax roll: an A/1 main residence, rendita €1,000.
    f.ufficio
        .registra(
            &cf(CF),
            building("A/1", 1000, true, "345"),
            data("2019-05-10"),
        )
        .await
        .unwrap();
    let c = f.calcola(2026, vec![]).await.calcolo.unwrap();
    // 1000 × 1.05 × 160 × 0.6% − 200 = €808: €404 in June, €404 in December.
    assert_eq!(c.imposta, Importo::euro(808).unwrap());
    assert_eq!(
        (c.acconto, c.saldo),
        (Importo::euro(404).unwrap(), Importo::euro(404).unwrap())
    );

    // The comune issues the June instalment: a debt position at the provider, the notice to
    // the portal.
    f.clock.set(datetime!(2026-06-01 09:00 UTC));
    let avviso = f
        .ufficio
        .emetti_avviso(&cf(CF), 2026, Rata::Acconto)
        .await
        .unwrap();
    let nav = avviso.nav.clone().unwrap();
    assert!(
        nav.as_str().starts_with("301"),
        "segregation code 01: {nav}"
    );
    Nav::parse(nav.as_str()).unwrap();
    let n = f.notifica(&nav).await;
    assert_eq!(n.importo(), Importo::euro(404).unwrap());
    let iupd = iupd_of(&f.ufficio, &nav);

    // Verify: payable, €404, due 16 June.
    let v = f.portale.verifica(&cf(TURIN_CF), &nav).await.unwrap();
    let EsitoVerifica::Pagabile(p) = v.esito else {
        panic!("{v:?}")
    };
    assert_eq!(
        (p.importo, p.scadenza.as_str()),
        (Importo::euro(404).unwrap(), "2026-06-16")
    );

    // Activate by card; a parallel activation is refused: payment in progress.
    let token = f.attiva(&nav, p.importo, Canale::Carta).await.unwrap();
    assert_eq!(
        f.attiva(&nav, p.importo, Canale::Addebito).await,
        Err(ErroreAvviso::PagamentoInCorso)
    );
    // The card is declined (KO): the notice is payable again; then paid (OK).
    let ko = f
        .portale
        .esito(
            &token,
            &nav,
            Risultato::Ko,
            Canale::Carta,
            None,
            istante("2026-06-01T09:01:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(ko.stato, EsitoRegistrato::Rilasciato);
    assert_eq!(f.ufficio.avviso(&iupd).unwrap().unwrap().versamento, None);
    // Four activations at once: one holds the notice, three are refused (in progress).
    let attempts: Vec<_> = (0..4)
        .map(|_| {
            let portale = f.portale.clone();
            let nav = nav.clone();
            let importo = p.importo;
            tokio::spawn(async move {
                portale
                    .attiva(&cf(TURIN_CF), &nav, importo, Canale::Carta)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let (mut tokens, mut busy) = (Vec::new(), 0);
    for a in attempts {
        match a.await.unwrap().esito {
            EsitoAttivazione::Attivato(x) => tokens.push(x.token),
            EsitoAttivazione::Errore { errore } => {
                assert_eq!(errore, ErroreAvviso::PagamentoInCorso);
                busy += 1;
            }
        }
    }
    assert_eq!((tokens.len(), busy), (1, 3));
    let token = tokens.pop().unwrap();
    let ok = f
        .portale
        .esito(
            &token,
            &nav,
            Risultato::Ok,
            Canale::Carta,
            Some(p.importo),
            istante("2026-06-01T09:02:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(ok.stato, EsitoRegistrato::Pagato, "{ok:?}");
    // The receipt closes the position at the comune.
    f.chiuso(&iupd).await;
    // A second payment of the same notice is refused: already paid.
    assert_eq!(
        f.attiva(&nav, p.importo, Canale::Carta).await,
        Err(ErroreAvviso::GiaPagato)
    );
    let v = f.portale.verifica(&cf(TURIN_CF), &nav).await.unwrap();
    assert_eq!(
        v.esito,
        EsitoVerifica::Errore {
            errore: ErroreAvviso::GiaPagato
        }
    );
    // The same OK again is the same answer, not a second payment.
    let again = f
        .portale
        .esito(
            &token,
            &nav,
            Risultato::Ok,
            Canale::Carta,
            Some(p.importo),
            istante("2026-06-01T09:02:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(again.ricevuta, ok.ricevuta);
    // An unknown notice, and a notice of another creditor code, are refused as unknown.
    let unknown = Nav::new(1, 999_999).unwrap();
    let v = f.portale.verifica(&cf(TURIN_CF), &unknown).await.unwrap();
    assert_eq!(
        v.esito,
        EsitoVerifica::Errore {
            errore: ErroreAvviso::Sconosciuto
        }
    );

    // The tax position shows the payment.
    let pos = f.posizione(2026).await;
    assert_eq!(pos.dovuto, Importo::euro(808).unwrap());
    assert_eq!(pos.versamenti.len(), 1);
    assert_eq!(pos.versamenti[0].importo, Importo::euro(404).unwrap());
    assert_eq!(pos.versamenti[0].rata, Some(Rata::Acconto));
    assert_eq!(pos.versamenti[0].data.as_str(), "2026-06-01");
    assert!(pos.avvisi.iter().any(|a| a.nav == nav && a.pagato));
    // A paid position cannot be cancelled.
    let e = f.ufficio.annulla(&iupd, "emesso per errore").await.unwrap();
    assert_eq!(
        (e.stato, e.errore),
        (StatoPosizione::Pagata, Some(ErroreAvviso::GiaPagato))
    );
    assert_eq!(pos.saldo.in_centesimi(), 40_400);
    assert_eq!(
        pos.immobili[0].possesso.as_ref().unwrap().dal.as_str(),
        "2019-05-10"
    );

    // The balance, paid at a counter on 15 December; the counter's outcome arrives on
    // the 18th, after the due date: the payment still completes.
    f.clock.set(datetime!(2026-12-01 09:00 UTC));
    let saldo = f
        .ufficio
        .emetti_avviso(&cf(CF), 2026, Rata::Saldo)
        .await
        .unwrap();
    let nav2 = saldo.nav.clone().unwrap();
    f.notifica(&nav2).await;
    f.clock.set(datetime!(2026-12-15 16:00 UTC));
    let token = f
        .attiva(&nav2, Importo::euro(404).unwrap(), Canale::Sportello)
        .await
        .unwrap();
    f.clock.set(datetime!(2026-12-18 10:00 UTC));
    let v = f.portale.verifica(&cf(TURIN_CF), &nav2).await.unwrap();
    assert_eq!(
        v.esito,
        EsitoVerifica::Errore {
            errore: ErroreAvviso::PagamentoInCorso
        }
    );
    let ok = f
        .portale
        .esito(
            &token,
            &nav2,
            Risultato::Ok,
            Canale::Sportello,
            Some(Importo::euro(404).unwrap()),
            istante("2026-12-15T16:05:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(ok.stato, EsitoRegistrato::Pagato);
    f.chiuso(&iupd_of(&f.ufficio, &nav2)).await;
    let pos = f.posizione(2026).await;
    assert_eq!(pos.versamenti.len(), 2);
    assert_eq!(pos.saldo.in_centesimi(), 0);
    assert!(
        pos.versamenti
            .iter()
            .any(|v| v.data.as_str() == "2026-12-15" && v.rata == Some(Rata::Saldo))
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_violation_is_assessed_and_paid_after_an_activation_that_timed_out() {
    let f = Federation::start().await;
    let avviso = f
        .ufficio
        .accerta(
            &cf(CF),
            2025,
            Importo::euro(100).unwrap(),
            Importo::euro(30).unwrap(),
            Importo::centesimi(512),
            vec![Motivo {
                codice: "omesso-versamento".into(),
                descrizione: "Saldo 2025 non versato.".into(),
            }],
            data("2026-05-31"),
        )
        .await
        .unwrap();
    let nav = avviso.nav.clone().unwrap();
    let Notifica::Accertamento(acc) = f.notifica(&nav).await else {
        panic!("not an assessment")
    };
    assert_eq!(acc.totale, Importo::centesimi(13_512));
    assert!(
        acc.protocollo.numero.starts_with("IMU/2026/"),
        "{}",
        acc.protocollo.numero
    );

    // Activated by card, then nothing: after 30 minutes the provider releases it.
    let token = f.attiva(&nav, acc.totale, Canale::Carta).await.unwrap();
    f.clock.advance(time::Duration::minutes(31));
    for _ in 0..200 {
        if f.nodo.posizione(&nav).unwrap().unwrap().attivo.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let p = f.nodo.posizione(&nav).unwrap().unwrap();
    assert!(p.attivo.is_none(), "released");
    assert_eq!(p.tentativi.len(), 1);
    assert_eq!(
        (p.tentativi[0].token.as_str(), p.tentativi[0].esito.as_str()),
        (token.as_str(), "scaduto")
    );
    // The creditor's view matches: unpaid, open.
    assert_eq!(
        f.ufficio
            .avviso(&iupd_of(&f.ufficio, &nav))
            .unwrap()
            .unwrap()
            .versamento,
        None
    );
    // Paid again, properly.
    let token = f.attiva(&nav, acc.totale, Canale::Addebito).await.unwrap();
    let ok = f
        .portale
        .esito(
            &token,
            &nav,
            Risultato::Ok,
            Canale::Addebito,
            Some(acc.totale),
            istante("2026-03-02T10:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(ok.stato, EsitoRegistrato::Pagato);
    f.chiuso(&iupd_of(&f.ufficio, &nav)).await;
    let pos = f.posizione(2025).await;
    assert_eq!(
        pos.versamenti[0].accertamento.as_ref(),
        Some(&acc.protocollo)
    );
    assert_eq!(pos.saldo.in_centesimi(), 0);
    // An unpaid notice past its due date expires; the creditor can cancel it, and then it
    // is refused as cancelled.
    f.ufficio
        .registra(
            &cf(CF),
            building("A/1", 1000, true, "345"),
            data("2019-05-10"),
        )
        .await
        .unwrap();
    let june = f
        .ufficio
        .emetti_avviso(&cf(CF), 2026, Rata::Acconto)
        .await
        .unwrap();
    let june_nav = june.nav.clone().unwrap();
    f.notifica(&june_nav).await;
    f.clock.set(datetime!(2026-06-17 08:00 UTC));
    let v = f.portale.verifica(&cf(TURIN_CF), &june_nav).await.unwrap();
    assert_eq!(
        v.esito,
        EsitoVerifica::Errore {
            errore: ErroreAvviso::Scaduto
        }
    );
    assert_eq!(
        f.nodo.posizione(&june_nav).unwrap().unwrap().stato,
        StatoPosizione::Scaduta
    );
    let e = f
        .ufficio
        .annulla(&iupd_of(&f.ufficio, &june_nav), "sostituito")
        .await
        .unwrap();
    assert_eq!((e.stato, e.errore), (StatoPosizione::Invalida, None));
    assert_eq!(
        f.attiva(&june_nav, june.importo, Canale::Carta).await,
        Err(ErroreAvviso::Annullato)
    );
    // With no property on the roll, no instalment is due: refused, saying so.
    let e = f
        .ufficio
        .emetti_avviso(&cf("MRTMTT25D09F205Z"), 2026, Rata::Acconto)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nothing is due"), "{e}");
    f.stop().await;
}

/// Waits until the tax office's notice `iupd` satisfies `f`, and returns it.
async fn avviso_quando(
    ufficio: &Ufficio,
    iupd: &str,
    what: &str,
    f: impl Fn(&snodo_connectors::tributi::ufficio::Avviso) -> bool,
) -> snodo_connectors::tributi::ufficio::Avviso {
    common::eventually(10, what, || async {
        ufficio.avviso(iupd).unwrap().filter(|a| f(a))
    })
    .await
}

/// Activates `nav` by card for `importo` and reports it paid at `il`.
async fn paga_carta(f: &Federation, nav: &Nav, importo: Importo, il: &str) {
    let token = f.attiva(nav, importo, Canale::Carta).await.unwrap();
    let ok = f
        .portale
        .esito(
            &token,
            nav,
            Risultato::Ok,
            Canale::Carta,
            Some(importo),
            istante(il),
        )
        .await
        .unwrap();
    assert_eq!(ok.stato, EsitoRegistrato::Pagato, "{ok:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_year_in_two_instalments_is_partially_paid_then_paid_and_the_tax_position_shows_both() {
    let f = Federation::start().await;
    f.ufficio
        .registra(
            &cf(CF),
            building("A/1", 1000, true, "345"),
            data("2019-05-10"),
        )
        .await
        .unwrap();
    // The year's notice: one debt position, June and December, €404 each, each its own NAV.
    f.clock.set(datetime!(2026-06-01 09:00 UTC));
    let avviso = f.ufficio.emetti_anno(&cf(CF), 2026).await.unwrap();
    assert_eq!(avviso.importo, Importo::euro(808).unwrap());
    assert_eq!(avviso.rate.len(), 2);
    let acconto = avviso.rate[0].nav.clone().unwrap();
    let saldo = avviso.rate[1].nav.clone().unwrap();
    assert_ne!(acconto, saldo);
    assert_eq!(avviso.nav.as_ref(), Some(&acconto));
    let iupd = iupd_of(&f.ufficio, &acconto);
    // The portal holds a notice per instalment.
    for (nav, rata) in [(&acconto, Rata::Acconto), (&saldo, Rata::Saldo)] {
        let Notifica::Avviso(n) = f.notifica(nav).await else {
            panic!("not an instalment")
        };
        assert_eq!((n.rata, n.importo), (rata, Importo::euro(404).unwrap()));
    }
    // One position at the provider, reached by either notice.
    let p = f.nodo.posizione(&saldo).unwrap().unwrap();
    assert_eq!(
        (p.nav.clone(), p.stato),
        (acconto.clone(), StatoPosizione::Valida)
    );
    assert_eq!(p.dati.iupd, iupd);
    for (nav, due) in [(&acconto, "2026-06-16"), (&saldo, "2026-12-16")] {
        let v = f.portale.verifica(&cf(TURIN_CF), nav).await.unwrap();
        let EsitoVerifica::Pagabile(x) = v.esito else {
            panic!("{v:?}")
        };
        assert_eq!(
            (x.importo, x.scadenza.as_str()),
            (Importo::euro(404).unwrap(), due)
        );
    }
    // The June instalment cannot be issued again on its own.
    let e = f
        .ufficio
        .emetti_avviso(&cf(CF), 2026, Rata::Acconto)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already asked for"), "{e}");

    // June paid by card: a receipt for it, and the creditor hears "partially paid".
    paga_carta(
        &f,
        &acconto,
        Importo::euro(404).unwrap(),
        "2026-06-10T10:00:00Z",
    )
    .await;
    let a = avviso_quando(&f.ufficio, &iupd, "partially paid at the comune", |a| {
        a.stato.as_ref().map(|s| s.0) == Some(StatoPosizione::ParzialmentePagata)
    })
    .await;
    let a = if a.rate[0].versamento.is_some() {
        a
    } else {
        avviso_quando(&f.ufficio, &iupd, "the June receipt", |a| {
            a.rate[0].versamento.is_some()
        })
        .await
    };
    assert_eq!(
        a.rate[0].versamento.as_ref().unwrap().rata,
        Some(Rata::Acconto)
    );
    assert!(a.rate[1].versamento.is_none());
    assert!(!a.pagato());
    assert_eq!(
        f.nodo.posizione(&acconto).unwrap().unwrap().stato,
        StatoPosizione::ParzialmentePagata
    );
    // The tax position: €404 paid of €808, the June notice paid, December's due.
    let pos = f.posizione(2026).await;
    assert_eq!(pos.versamenti.len(), 1);
    assert_eq!(
        (pos.versamenti[0].importo, pos.versamenti[0].rata),
        (Importo::euro(404).unwrap(), Some(Rata::Acconto))
    );
    assert_eq!(pos.versamenti[0].nav.as_ref(), Some(&acconto));
    assert_eq!(pos.saldo.in_centesimi(), 40_400);
    let emessi: Vec<(Nav, bool)> = pos
        .avvisi
        .iter()
        .map(|a| (a.nav.clone(), a.pagato))
        .collect();
    assert_eq!(emessi, [(acconto.clone(), true), (saldo.clone(), false)]);
    // Partially paid: it cannot be cancelled, and June cannot be paid twice.
    let e = f.ufficio.annulla(&iupd, "emesso per errore").await.unwrap();
    assert_eq!(
        (e.stato, e.errore),
        (
            StatoPosizione::ParzialmentePagata,
            Some(ErroreAvviso::ParzialmentePagato)
        )
    );
    assert_eq!(
        f.attiva(&acconto, Importo::euro(404).unwrap(), Canale::Carta)
            .await,
        Err(ErroreAvviso::GiaPagato)
    );
    // June's money settles now: the flow lists June only; the notice is not reported whole.
    let flow = f
        .nodo
        .rendiconta(&Federation::turin(), data("2026-06-12"))
        .await
        .unwrap()
        .expect("June to report");
    assert_eq!(
        flow.pagamenti
            .iter()
            .map(|p| p.iuv.clone())
            .collect::<Vec<_>>(),
        [acconto.iuv()]
    );
    avviso_quando(&f.ufficio, &iupd, "June reported", |a| {
        a.rate[0].rendicontato
    })
    .await;
    assert!(!f.ufficio.avviso(&iupd).unwrap().unwrap().rendicontato);

    // December paid: the last receipt, and the creditor hears "paid".
    f.clock.set(datetime!(2026-12-10 09:00 UTC));
    paga_carta(
        &f,
        &saldo,
        Importo::euro(404).unwrap(),
        "2026-12-10T09:30:00Z",
    )
    .await;
    let a = avviso_quando(&f.ufficio, &iupd, "paid at the comune", |a| {
        a.stato.as_ref().map(|s| s.0) == Some(StatoPosizione::Pagata) && a.pagato()
    })
    .await;
    assert_eq!(
        a.rate[1].versamento.as_ref().unwrap().data.as_str(),
        "2026-12-10"
    );
    assert_eq!(
        f.nodo.posizione(&saldo).unwrap().unwrap().stato,
        StatoPosizione::Pagata
    );
    let pos = f.posizione(2026).await;
    assert_eq!(pos.versamenti.len(), 2);
    assert_eq!(pos.saldo.in_centesimi(), 0);
    assert!(pos.avvisi.iter().all(|a| a.pagato), "{:?}", pos.avvisi);
    assert!(
        pos.versamenti
            .iter()
            .any(|v| v.rata == Some(Rata::Saldo) && v.nav.as_ref() == Some(&saldo))
    );
    let e = f.ufficio.annulla(&iupd, "emesso per errore").await.unwrap();
    assert_eq!(e.errore, Some(ErroreAvviso::GiaPagato));
    // December settles: the position is reported, and so is the notice at the comune.
    let flow = f
        .nodo
        .rendiconta(&Federation::turin(), data("2026-12-14"))
        .await
        .unwrap()
        .expect("December to report");
    assert_eq!(flow.pagamenti.len(), 1);
    assert_eq!(flow.pagamenti.as_slice()[0].iuv, saldo.iuv());
    assert_eq!(
        f.nodo.posizione(&acconto).unwrap().unwrap().stato,
        StatoPosizione::Rendicontata
    );
    avviso_quando(&f.ufficio, &iupd, "the notice reported", |a| a.rendicontato).await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unpaid_instalment_expires_alone_and_a_plan_that_does_not_hold_is_refused() {
    let f = Federation::start().await;
    f.ufficio
        .registra(
            &cf(CF),
            building("A/1", 1000, true, "345"),
            data("2019-05-10"),
        )
        .await
        .unwrap();
    f.clock.set(datetime!(2026-06-01 09:00 UTC));
    let avviso = f.ufficio.emetti_anno(&cf(CF), 2026).await.unwrap();
    let (acconto, saldo) = (
        avviso.rate[0].nav.clone().unwrap(),
        avviso.rate[1].nav.clone().unwrap(),
    );
    let iupd = iupd_of(&f.ufficio, &acconto);
    // June not paid by the 16th: June is refused as expired, December is still payable and
    // the position stays valid.
    f.clock.set(datetime!(2026-06-17 08:00 UTC));
    let v = f.portale.verifica(&cf(TURIN_CF), &acconto).await.unwrap();
    assert_eq!(
        v.esito,
        EsitoVerifica::Errore {
            errore: ErroreAvviso::Scaduto
        }
    );
    assert_eq!(
        f.attiva(&acconto, Importo::euro(404).unwrap(), Canale::Carta)
            .await,
        Err(ErroreAvviso::Scaduto)
    );
    let v = f.portale.verifica(&cf(TURIN_CF), &saldo).await.unwrap();
    assert!(matches!(v.esito, EsitoVerifica::Pagabile(_)), "{v:?}");
    assert_eq!(
        f.nodo.posizione(&saldo).unwrap().unwrap().stato,
        StatoPosizione::Valida
    );
    // Neither paid by 16 December: the position expires, and the comune hears it.
    f.clock.set(datetime!(2026-12-17 08:00 UTC));
    let v = f.portale.verifica(&cf(TURIN_CF), &saldo).await.unwrap();
    assert_eq!(
        v.esito,
        EsitoVerifica::Errore {
            errore: ErroreAvviso::Scaduto
        }
    );
    avviso_quando(&f.ufficio, &iupd, "expired at the comune", |a| {
        a.stato.as_ref().map(|s| s.0) == Some(StatoPosizione::Scaduta)
    })
    .await;
    // Nothing paid: it can be cancelled.
    let e = f.ufficio.annulla(&iupd, "sostituito").await.unwrap();
    assert_eq!((e.stato, e.errore), (StatoPosizione::Invalida, None));

    // Plans that do not hold together never reach the provider: the hub refuses the body,
    // naming the field and what is wrong.
    let url = format!("https://127.0.0.1:{}", f.hub.addr.port());
    let comune = common::service_client(f.dir.path(), &url, TURIN);
    let rata = |importo: u64, scadenza: &str| json!({"importo": importo, "scadenza": scadenza});
    let good = json!({
        "iupd": "IMU-RATE-PROVA",
        "ente": TURIN_CF,
        "debitore": {"codice_fiscale": CF, "denominazione": "Mario Rossi"},
        "importo": 80_800,
        "scadenza": "2027-12-16",
        "causale": "IMU 2027",
        "trasferimenti": [{
            "indice": 1, "ente": TURIN_CF, "iban": "IT60X0542811101000000123456",
            "importo": 80_800, "causale": "IMU 2027", "tassonomia": "9/0101101IM/"
        }],
        "rate": [rata(40_400, "2027-06-16"), rata(40_400, "2027-12-16")]
    });
    snodo_schemas::Catalog::global()
        .validate_json("pagamenti", "posizione-crea", &good)
        .unwrap();
    for (rate, field, says) in [
        (json!([rata(80_800, "2027-12-16")]), "/rate", ""),
        (
            json!([rata(40_400, "2027-06-16"), rata(40_000, "2027-12-16")]),
            "/rate",
            "sum to €804.00, not to the total €808.00",
        ),
        (
            json!([rata(40_400, "2027-12-16"), rata(40_400, "2027-06-16")]),
            "/rate/1/scadenza",
            "not after instalment 1's 2027-12-16",
        ),
    ] {
        let mut body = good.clone();
        body["rate"] = rate;
        let env = comune
            .envelope(
                Recipient::Entity(NODO.parse().unwrap()),
                "pagamenti",
                "posizione-crea",
            )
            .profile(snodo_envelopes::Profile::Request)
            .json(body)
            .build()
            .unwrap();
        let err = comune.submit(&env).await.unwrap_err();
        assert_eq!(err.code(), Some("body-schema-invalid"), "{field}: {err}");
        assert!(
            err.to_string().contains(field) && err.to_string().contains(says),
            "{field}: {err}"
        );
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_variation_changes_the_next_calculation_and_a_report_becomes_an_email() {
    let f = Federation::start().await;
    f.ufficio
        .registra(
            &cf(CF),
            building("A/1", 1000, true, "345"),
            data("2019-05-10"),
        )
        .await
        .unwrap();
    assert_eq!(
        f.calcola(2026, vec![]).await.calcolo.unwrap().imposta,
        Importo::euro(808).unwrap()
    );
    // Bought an A/2 on 16 April 2026 (April is the buyer's: 9 months).
    let v: VariazioneEsito = f
        .portale
        .al_comune(
            &Federation::turin(),
            &Variazione {
                pratica: "VAR-1".into(),
                contribuente: cf(CF),
                comune: CodiceIstat::parse("001272").unwrap(),
                tipo: TipoVariazione::Acquisto,
                data: data("2026-04-16"),
                immobile: building("A/2", 500, false, "346"),
                nota: None,
            },
        )
        .await
        .unwrap();
    let protocollo = v.protocollo.expect("recorded with a protocol");
    assert!(v.motivi.is_empty());
    assert!(protocollo.numero.starts_with("IMU/2026/"));
    // 808 + 500 × 1.05 × 160 × 0.86% × 9/12 (= 541.80) = 1,349.80 → €1,350.
    let c = f.calcola(2026, vec![]).await.calcolo.unwrap();
    assert_eq!(c.immobili.len(), 2);
    assert_eq!(c.immobili[1].mesi, 9);
    assert_eq!(c.imposta, Importo::euro(1350).unwrap());
    // Buying it again is refused, naming why.
    let again: VariazioneEsito = f
        .portale
        .al_comune(
            &Federation::turin(),
            &Variazione {
                pratica: "VAR-2".into(),
                contribuente: cf(CF),
                comune: CodiceIstat::parse("001272").unwrap(),
                tipo: TipoVariazione::Acquisto,
                data: data("2026-05-01"),
                immobile: building("A/2", 500, false, "346"),
                nota: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(again.protocollo, None);
    assert_eq!(again.motivi[0].codice, "gia-posseduto");
    // Sold on 1 October: held April (from the 16th) to September: 6 months.
    let sold: VariazioneEsito = f
        .portale
        .al_comune(
            &Federation::turin(),
            &Variazione {
                pratica: "VAR-3".into(),
                contribuente: cf(CF),
                comune: CodiceIstat::parse("001272").unwrap(),
                tipo: TipoVariazione::Cessione,
                data: data("2026-10-01"),
                immobile: building("A/2", 500, false, "346"),
                nota: None,
            },
        )
        .await
        .unwrap();
    assert!(sold.protocollo.is_some(), "{sold:?}");
    let c = f.calcola(2026, vec![]).await.calcolo.unwrap();
    assert_eq!(c.immobili[1].mesi, 6);
    // 808 + 722.40 × 6/12 (= 361.20) = 1,169.20 → €1,169.
    assert_eq!(c.imposta, Importo::euro(1169).unwrap());

    // A discrepancy report: acknowledged with a protocol, and an e-mail to the tax office.
    let s: SegnalazioneEsito = f
        .portale
        .al_comune(
            &Federation::turin(),
            &Segnalazione {
                pratica: "SEG-1".into(),
                contribuente: cf(CF),
                comune: CodiceIstat::parse("001272").unwrap(),
                anno: 2026,
                immobile: None,
                testo: "La rendita dell'A/1 risulta errata.".into(),
                email: "mario.rossi@example.it".into(),
            },
        )
        .await
        .unwrap();
    let mails: Vec<_> = std::fs::read_dir(f.dir.path().join("mail"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0].contains("tributi@comune.torino.it"),
        "{}",
        mails[0]
    );
    assert!(mails[0].contains(&s.protocollo.numero), "{}", mails[0]);
    assert!(mails[0].contains("rendita"), "{}", mails[0]);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_inputs_are_refused_clearly() {
    let f = Federation::start().await;
    // A category the tax does not know (group E): the tax office says which and why.
    let mut e = building("E/1", 100, false, "1");
    e.quota = bp(5000);
    let r = f
        .calcola(
            2026,
            vec![ImmobileCalcolo {
                immobile: e,
                mesi: None,
                possesso: None,
                residenti: None,
            }],
        )
        .await;
    assert!(r.calcolo.is_none());
    assert_eq!(r.motivi[0].codice, "categoria-sconosciuta");
    assert!(
        r.motivi[0].descrizione.contains("E/1"),
        "{}",
        r.motivi[0].descrizione
    );

    // The hub refuses bodies that break the schema, naming the field.
    let url = format!("https://127.0.0.1:{}", f.hub.addr.port());
    let pki_dir = f.dir.path().join("pki");
    let portal = HubClient::new(&HubClientConfig::new(
        url,
        pki_dir.join("ca.crt"),
        pki_dir.join("portale-comunefacile.crt"),
        pki_dir.join("portale-comunefacile.key"),
    ))
    .unwrap();
    let good = serde_json::to_value(CalcoloRichiesta {
        pratica: "P".into(),
        contribuente: cf(CF),
        comune: CodiceIstat::parse("001272").unwrap(),
        anno: 2026,
        immobili: vec![ImmobileCalcolo {
            immobile: building("A/2", 100, false, "1"),
            mesi: None,
            possesso: None,
            residenti: None,
        }],
    })
    .unwrap();
    for (pointer, value, field) in [
        ("/immobili/0/immobile/categoria", json!("A/99"), "categoria"),
        ("/immobili/0/immobile/quota", json!(10_001), "quota"),
        ("/immobili/0/immobile/rendita", json!(-5), "rendita"),
    ] {
        let mut body = good.clone();
        *body.pointer_mut(pointer).unwrap() = value;
        let env = portal
            .envelope(
                Recipient::Entity(TURIN.parse().unwrap()),
                "tributi.imu",
                "calcolo",
            )
            .profile(snodo_envelopes::Profile::Request)
            .json(body)
            .build()
            .unwrap();
        let err = portal.submit(&env).await.unwrap_err();
        assert_eq!(err.code(), Some("body-schema-invalid"), "{field}: {err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    // A notice number with wrong check digits.
    let mut nav = Nav::new(1, 1).unwrap().as_str().to_owned();
    nav.replace_range(16..18, "45");
    assert!(
        Nav::parse(&nav)
            .unwrap_err()
            .to_string()
            .contains("check digits")
    );
    let env = portal
        .envelope(
            Recipient::Entity(NODO.parse().unwrap()),
            "pagamenti",
            "verifica",
        )
        .profile(snodo_envelopes::Profile::Request)
        .json(json!({"ente": TURIN_CF, "nav": nav}))
        .build()
        .unwrap();
    let err = portal.submit(&env).await.unwrap_err();
    assert_eq!(err.code(), Some("body-schema-invalid"), "{err}");
    assert!(err.to_string().contains("nav"), "{err}");
    f.stop().await;
}

#[test]
fn snodo_connector_runs_the_tax_back_offices_from_their_configurations() {
    use snodo_connectors::config::{AdapterSection, Config as ConnectorConfig};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tributi");
    for (file, name) in [
        ("pagopa.toml", "pagopa"),
        ("tributi-001272.toml", "tributi"),
        ("portale.toml", "portale-tributi"),
    ] {
        let config = ConnectorConfig::load(&dir.join(file)).unwrap();
        let AdapterSection::Reference { back_office, .. } = &config.adapter else {
            panic!("{file}: {:?}", config.adapter)
        };
        assert_eq!(back_office, name);
    }
    // Bad data is refused naming the field.
    let tmp = tempfile::tempdir().unwrap();
    for (file, from, to, says) in [
        (
            "pagopa.toml",
            "segregazione = 2",
            "segregazione = 1",
            "share segregation code 01",
        ),
        (
            "pagopa.toml",
            "codice_fiscale = \"00480530047\"",
            "codice_fiscale = \"00480530048\"",
            "creditori[1].codice_fiscale",
        ),
        (
            "tributi-001272.toml",
            "iban = \"IT60X0542811101000000123456\"\n",
            "",
            "missing field `iban`",
        ),
        (
            "tributi-001272.toml",
            "ordinaria = 106",
            "ordinaria = 10001",
            "aliquote[0].aliquote.ordinaria",
        ),
        ("portale.toml", "nodo = ", "nodi = ", "unknown field `nodi`"),
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(text.contains(from), "{file}: {from}");
        let path = tmp.path().join(file);
        std::fs::write(&path, text.replace(from, to)).unwrap();
        match ConnectorConfig::load(&path) {
            // Two creditors sharing a segregation code pass the shape and are refused when
            // the provider starts.
            Ok(_) if says.is_empty() => {}
            Ok(_) => panic!("{file}: {to} accepted"),
            Err(e) => {
                let e = e.to_string();
                assert!(
                    e.contains("adapter.data") && e.contains(says),
                    "{file}: {e}"
                );
            }
        }
    }
}
