//! Building permits end to end over a real hub on 127.0.0.1 (real TLS, signed envelopes,
//! bodies checked against the catalog): the comune's building office, the payment provider and
//! the portal as reference back offices, each with its own store and pull loop, on one
//! `ManualClock` that carries the 90-day and 30-day terms.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use snodo_broker::cli::serve::Running;
use snodo_connectors::clock::SharedClock;
use snodo_connectors::dispatch::PullConfig;
use snodo_connectors::edilizia::documenti::sha256;
use snodo_connectors::edilizia::oneri::{Tariffe, TariffeAnno};
use snodo_connectors::edilizia::portale::{Portale, PraticaPortale};
use snodo_connectors::edilizia::sportello::{
    self, ErroreSportello, Impostazioni, Pratica, Scadenza, Sportello,
};
use snodo_connectors::pagamenti::{Creditore, Impostazioni as NodoImpostazioni, Nodo};
use snodo_connectors::typed;
use snodo_connectors::{Dispatcher, HubClient, ManualClock, Store};
use snodo_envelopes::{EntityId, Profile};
use snodo_schemas::formats::{
    CodiceBelfiore, CodiceFiscale, CodiceFiscalePersona, CodiceIstat, Data, Elenco, Importo,
    Istante, PuntiBase,
};
use snodo_schemas::services::dati::{Catasto, Documento, Indirizzo, Motivo, RiferimentoCatastale};
use snodo_schemas::services::edilizia_permessi::{
    Contenuto, EsitoControllo, EsitoProvvedimento, Integrazione, Intervento, Istanza,
    ProtocolloIstanza, Stato, StatoIstanza, Tecnico, Titolo,
};
use snodo_schemas::services::pagamenti::{Canale, EsitoRegistrato};
use time::OffsetDateTime;
use time::macros::datetime;
use tokio::sync::watch;

const TURIN: &str = "comune:001272";
const PORTAL: &str = "portale:comunefacile";
const NODO: &str = "pagopa:nodo";
const PREFECTURE: &str = "prefettura:TO";
const CF: &str = "RSSMRA85T10A562S";
const TURIN_CF: &str = "00514490010";

const REGISTRY: &str = include_str!("../examples/edilizia/hub-services.toml");

/// The hub, and the building office, the provider and the portal running.
struct Federation {
    _dir: tempfile::TempDir,
    hub: Running,
    clock: Arc<ManualClock>,
    sportello: Arc<Sportello>,
    portale: Arc<Portale>,
    /// The comune's own client, to send the portal what the building office would.
    comune: HubClient,
    stop: watch::Sender<bool>,
}

fn data(s: &str) -> Data {
    Data::parse(s).unwrap()
}

fn euro(e: u64) -> Importo {
    Importo::euro(e).unwrap()
}

fn documento(nome: &str, bytes: &[u8]) -> Documento {
    Documento {
        tipo: "elaborato di progetto".into(),
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

const RELAZIONE: &[u8] = b"%PDF-1.7 relazione tecnica asseverata";
const TAVOLE: &[u8] = b"%PDF-1.7 tavole di progetto";

/// An application: 120 m³ declared at €80,000, the technical report attached, the drawings by
/// reference.
fn istanza(pratica: &str, titolo: Titolo, area_vincolata: bool) -> Istanza {
    Istanza {
        pratica: pratica.into(),
        comune: CodiceIstat::parse("001272").unwrap(),
        titolo,
        richiedente: CodiceFiscale::parse(CF).unwrap(),
        tecnico: Tecnico {
            codice_fiscale: CodiceFiscalePersona::parse("MRTMTT25D09F205Z").unwrap(),
            nome: "Matteo Martini".into(),
            albo: "Ordine degli Architetti di Torino n. 1234".into(),
            pec: "matteo.martini@pec.example.it".into(),
        },
        indirizzo: Indirizzo {
            comune: CodiceIstat::parse("001272").unwrap(),
            via: "Via Giuseppe Garibaldi".into(),
            civico: "12".into(),
            scala: None,
            piano: None,
            interno: None,
            cap: None,
        },
        catasto: Elenco::new(vec![RiferimentoCatastale {
            comune: CodiceBelfiore::parse("L219").unwrap(),
            catasto: Catasto::Fabbricati,
            sezione: None,
            foglio: "12".into(),
            particella: "345".into(),
            subalterno: Some("6".into()),
        }])
        .unwrap(),
        intervento: Intervento {
            descrizione: "Ampliamento di un edificio residenziale".into(),
            superficie_mq: 40,
            volume_mc: 120,
            costo_costruzione: euro(80_000),
        },
        area_vincolata,
        allegati: Elenco::new(vec![
            documento("relazione.pdf", RELAZIONE),
            documento("tavole.pdf", TAVOLE),
        ])
        .unwrap(),
        contenuti: vec![contenuto("relazione.pdf", RELAZIONE)],
    }
}

/// Waits until `f` gives a value.
async fn eventually<T>(what: &str, f: impl Fn() -> Option<T>) -> T {
    for _ in 0..300 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} never happened");
}

/// Lets whatever is in flight land, for checks that something did not happen.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(600)).await;
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
                    codice_fiscale: CodiceFiscale::parse(TURIN_CF).unwrap(),
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
        let comune = c.clone();
        let sportello = Sportello::open(
            c.clone(),
            store.clone(),
            shared.clone(),
            Impostazioni {
                comune: CodiceIstat::parse("001272").unwrap(),
                denominazione: "Comune di Torino".into(),
                codice_fiscale: CodiceFiscale::parse(TURIN_CF).unwrap(),
                iban: "IT60X0542811101000000123456".into(),
                nodo: NODO.parse().unwrap(),
                responsabile: "Arch. Laura Bianchi".into(),
                giorni_integrazione: 30,
                giorni_pagamento: 30,
                tariffe: vec![TariffeAnno {
                    anno: 2026,
                    tariffe: Tariffe {
                        primaria_mc: Importo::centesimi(1_250),
                        secondaria_mc: Importo::centesimi(1_830),
                        quota_costo: PuntiBase::new(500).unwrap(),
                        diritti_permesso: euro(150),
                        diritti_scia: euro(100),
                        diritti_cila: euro(50),
                    },
                }],
            },
        )
        .unwrap();
        let d = Arc::new(
            sportello
                .install(Dispatcher::builder())
                .build(c, store)
                .unwrap(),
        );
        tokio::spawn(d.run_pull(pull, shutdown.clone()));
        tokio::spawn(sportello.clone().run(shutdown.clone()));

        let store = Store::open(&dir.path().join("portale")).unwrap();
        let c = client(PORTAL);
        let portale =
            Portale::open(c.clone(), store.clone(), shared, NODO.parse().unwrap()).unwrap();
        let d = Arc::new(
            portale
                .install(Dispatcher::builder())
                .build(c, store)
                .unwrap(),
        );
        tokio::spawn(d.run_pull(pull, shutdown.clone()));

        Federation {
            _dir: dir,
            hub,
            clock,
            sportello,
            portale,
            comune,
            stop,
        }
    }

    fn turin() -> EntityId {
        TURIN.parse().unwrap()
    }

    fn key(pratica: &str) -> String {
        sportello::chiave(&PORTAL.parse().unwrap(), pratica)
    }

    async fn presenta(&self, istanza: &Istanza) -> ProtocolloIstanza {
        self.portale
            .presenta(&Federation::turin(), istanza)
            .await
            .unwrap()
    }

    fn pratica(&self, pratica: &str) -> Pratica {
        self.sportello
            .pratica(&Federation::key(pratica))
            .unwrap()
            .unwrap()
    }

    /// The practice at the portal once `cond` holds of it.
    async fn al_portale(
        &self,
        pratica: &str,
        what: &str,
        cond: impl Fn(&PraticaPortale) -> bool,
    ) -> PraticaPortale {
        eventually(what, || {
            self.portale.pratica(pratica).unwrap().filter(|p| cond(p))
        })
        .await
    }

    /// The practice at the comune once `cond` holds of it.
    async fn al_comune(
        &self,
        pratica: &str,
        what: &str,
        cond: impl Fn(&Pratica) -> bool,
    ) -> Pratica {
        eventually(what, || {
            self.sportello
                .pratica(&Federation::key(pratica))
                .unwrap()
                .filter(|p| cond(p))
        })
        .await
    }

    fn scadenza(&self, pratica: &str, s: Scadenza) -> Option<OffsetDateTime> {
        self.sportello
            .scadenza(&Federation::key(pratica), s)
            .unwrap()
    }

    async fn integra(&self, pratica: &str, nome: &str, bytes: &[u8]) {
        self.portale
            .integra(
                &Federation::turin(),
                &Integrazione {
                    pratica: pratica.into(),
                    allegati: Elenco::new(vec![documento(nome, bytes)]).unwrap(),
                    nota: Some("Integrazioni richieste.".into()),
                    contenuti: vec![contenuto(nome, bytes)],
                },
            )
            .await
            .unwrap();
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        self.hub.shutdown().await.unwrap();
    }
}

fn motivo(codice: &str, descrizione: &str) -> Motivo {
    Motivo {
        codice: codice.into(),
        descrizione: descrizione.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_permit_through_integration_and_payment_is_granted_by_silence_ninety_days_after_the_integration()
 {
    let f = Federation::start().await;
    let p = f
        .presenta(&istanza("PDC-1", Titolo::PermessoDiCostruire, false))
        .await;
    assert!(p.motivi.is_empty(), "{:?}", p.motivi);
    let protocollo = p.protocollo.expect("protocolled");
    assert_eq!(protocollo.numero, "EDI/2026/000001");
    assert_eq!(protocollo.data, data("2026-03-02"));
    assert_eq!(p.responsabile.as_deref(), Some("Arch. Laura Bianchi"));
    // 90 days from the day after the protocol.
    assert_eq!(p.termine, Some(data("2026-05-31")));
    let c = f.pratica("PDC-1");
    assert_eq!(
        c.storia.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [
            StatoIstanza::Presentata,
            StatoIstanza::Protocollata,
            StatoIstanza::Istruttoria
        ]
    );
    // The attached report is kept, verified; the drawings are a reference.
    assert_eq!(
        f.sportello
            .documento(&Federation::key("PDC-1"), "relazione.pdf")
            .unwrap()
            .as_deref(),
        Some(RELAZIONE)
    );
    assert_eq!(
        f.sportello
            .documento(&Federation::key("PDC-1"), "tavole.pdf")
            .unwrap(),
        None
    );
    assert_eq!(
        f.scadenza("PDC-1", Scadenza::Decisione),
        Some(datetime!(2026-06-01 00:00 UTC))
    );

    // The fees on Turin's rates: 120 m³ × €12.50 + 120 m³ × €18.30 + 5% of €80,000 + €150.
    let portal = f
        .al_portale("PDC-1", "the fees reach the portal", |p| p.oneri.is_some())
        .await;
    let oneri = portal.oneri.unwrap();
    assert_eq!(
        (
            oneri.urbanizzazione_primaria,
            oneri.urbanizzazione_secondaria,
            oneri.costo_costruzione,
            oneri.diritti_segreteria,
            oneri.totale
        ),
        (
            euro(1_500),
            euro(2_196),
            euro(4_000),
            euro(150),
            euro(7_846)
        )
    );
    assert!(oneri.nav.as_str().starts_with("301"), "{}", oneri.nav);
    assert_eq!(oneri.scadenza, data("2026-04-01"));
    // Not granted while the fees are unpaid.
    let e = f
        .sportello
        .decidi(
            &Federation::key("PDC-1"),
            EsitoProvvedimento::Rilasciato,
            Vec::new(),
            Vec::new(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, ErroreSportello::NonAmmessa(_)) && e.to_string().contains("fees"),
        "{e}"
    );

    // On 20 March the office asks for integrations: the term stops.
    f.clock.set(datetime!(2026-03-20 09:00 UTC));
    let interrotto = f
        .sportello
        .richiedi_integrazioni(
            &Federation::key("PDC-1"),
            vec!["Relazione paesaggistica".into()],
        )
        .await
        .unwrap();
    assert!(interrotto);
    assert_eq!(f.scadenza("PDC-1", Scadenza::Decisione), None);
    let portal = f
        .al_portale("PDC-1", "the request reaches the portal", |p| {
            p.stato == Some(StatoIstanza::Integrazione) && !p.richieste.is_empty()
        })
        .await;
    assert_eq!(portal.richieste[0].termine, data("2026-04-19"));

    // The citizen pays through the portal; the provider's receipt closes the fees at the comune.
    let esito = f.portale.paga("PDC-1", Canale::Carta).await.unwrap();
    assert_eq!(esito.stato, EsitoRegistrato::Pagato, "{esito:?}");
    eventually("the receipt reaches the comune", || {
        f.sportello
            .oneri(&Federation::key("PDC-1"))
            .unwrap()
            .filter(|o| o.pagato_il.is_some())
    })
    .await;
    assert_eq!(f.pratica("PDC-1").stato, StatoIstanza::Integrazione);

    // The integrations come on 10 April: the 90 days start again from that day.
    f.clock.set(datetime!(2026-04-10 10:00 UTC));
    f.integra(
        "PDC-1",
        "paesaggistica.pdf",
        b"%PDF-1.7 relazione paesaggistica",
    )
    .await;
    let c = f
        .al_comune("PDC-1", "the integrations are taken", |p| {
            p.stato == StatoIstanza::Istruttoria
        })
        .await;
    let t = c.termine.clone().unwrap();
    assert!(t.interrotto && !t.fermo);
    assert_eq!(t.decorre, data("2026-04-10"));
    assert_eq!(t.ultimo_giorno().unwrap(), Some(data("2026-07-09")));
    assert_eq!(
        f.scadenza("PDC-1", Scadenza::Decisione),
        Some(datetime!(2026-07-10 00:00 UTC))
    );
    assert_eq!(c.integrazioni[0].nome, "paesaggistica.pdf");
    assert!(
        f.sportello
            .documento(&Federation::key("PDC-1"), "paesaggistica.pdf")
            .unwrap()
            .is_some()
    );

    // The original term passes: nothing, it was interrupted.
    f.clock.set(datetime!(2026-06-01 09:00 UTC));
    settle().await;
    assert_eq!(f.pratica("PDC-1").stato, StatoIstanza::Istruttoria);
    f.clock.set(datetime!(2026-07-09 23:59 UTC));
    settle().await;
    assert_eq!(f.pratica("PDC-1").provvedimento, None);

    // The new term passes: silence assents.
    f.clock.set(datetime!(2026-07-10 00:00 UTC));
    let c = f
        .al_comune("PDC-1", "silence assents", |p| {
            p.stato == StatoIstanza::Rilasciata
        })
        .await;
    assert_eq!(c.silenzio_assenso, Some(data("2026-07-10")));
    let prov = c.provvedimento.clone().unwrap();
    assert_eq!(prov.esito, EsitoProvvedimento::Rilasciato);
    assert_eq!(prov.protocollo.numero, "EDI/2026/000002");
    assert!(prov.prescrizioni[0].contains("silenzio"), "{prov:?}");
    assert_eq!(prov.prescrizioni.len(), 1, "the fees are paid: {prov:?}");
    // The term was interrupted once.
    assert_eq!(
        c.storia
            .iter()
            .filter(|(s, _)| *s == StatoIstanza::Integrazione)
            .count(),
        1
    );
    let portal = f
        .al_portale("PDC-1", "the decision reaches the portal", |p| {
            p.provvedimento.is_some() && p.stato == Some(StatoIstanza::Rilasciata)
        })
        .await;
    assert_eq!(portal.provvedimento.unwrap(), prov);
    assert!(portal.ricevuta.is_some());
    assert!(
        portal
            .stati
            .last()
            .and_then(|s| s.nota.as_deref())
            .is_some_and(|n| n.contains("silenzio-assenso")),
        "{:?}",
        portal.stati.last()
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_constrained_area_silence_does_not_grant() {
    let f = Federation::start().await;
    let p = f
        .presenta(&istanza("PDC-V", Titolo::PermessoDiCostruire, true))
        .await;
    assert_eq!(p.termine, Some(data("2026-05-31")));
    f.al_portale("PDC-V", "the fees reach the portal", |p| p.oneri.is_some())
        .await;
    f.clock.set(datetime!(2026-06-01 00:00 UTC));
    let portal = f
        .al_portale("PDC-V", "the term's passing reaches the portal", |p| {
            p.stati
                .last()
                .and_then(|s| s.nota.as_deref())
                .is_some_and(|n| n.contains("vincolata"))
        })
        .await;
    assert_eq!(portal.stato, Some(StatoIstanza::Istruttoria));
    assert_eq!(portal.provvedimento, None);
    let c = f.pratica("PDC-V");
    assert_eq!(c.stato, StatoIstanza::Istruttoria);
    assert_eq!((c.provvedimento, c.silenzio_assenso), (None, None));
    assert_eq!(f.scadenza("PDC-V", Scadenza::Decisione), None);
    // Still nothing later: only an express decision ends it.
    f.clock.set(datetime!(2026-09-01 00:00 UTC));
    settle().await;
    assert_eq!(f.pratica("PDC-V").stato, StatoIstanza::Istruttoria);
    // A denial needs its reasons; with them it reaches the portal.
    let e = f
        .sportello
        .decidi(
            &Federation::key("PDC-V"),
            EsitoProvvedimento::Negato,
            Vec::new(),
            Vec::new(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("reasons"), "{e}");
    f.sportello
        .decidi(
            &Federation::key("PDC-V"),
            EsitoProvvedimento::Negato,
            vec![motivo(
                "parere-soprintendenza",
                "Parere contrario della Soprintendenza.",
            )],
            Vec::new(),
        )
        .await
        .unwrap();
    let portal = f
        .al_portale("PDC-V", "the denial reaches the portal", |p| {
            p.stato == Some(StatoIstanza::Negata) && p.provvedimento.is_some()
        })
        .await;
    assert_eq!(
        portal.provvedimento.unwrap().motivi[0].codice,
        "parere-soprintendenza"
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_request_for_integrations_does_not_interrupt_the_term_again() {
    let f = Federation::start().await;
    f.presenta(&istanza("PDC-2", Titolo::PermessoDiCostruire, false))
        .await;
    let key = Federation::key("PDC-2");
    f.clock.set(datetime!(2026-03-10 09:00 UTC));
    assert!(
        f.sportello
            .richiedi_integrazioni(&key, vec!["Computo metrico".into()])
            .await
            .unwrap()
    );
    f.clock.set(datetime!(2026-03-20 09:00 UTC));
    f.integra("PDC-2", "computo.pdf", b"%PDF-1.7 computo").await;
    f.al_comune("PDC-2", "the first integrations", |p| {
        p.stato == StatoIstanza::Istruttoria
    })
    .await;
    // 90 days from 20 March: 18 June.
    let dopo_la_prima = Some(datetime!(2026-06-19 00:00 UTC));
    assert_eq!(f.scadenza("PDC-2", Scadenza::Decisione), dopo_la_prima);

    // A second request: the term runs on.
    f.clock.set(datetime!(2026-04-01 09:00 UTC));
    assert!(
        !f.sportello
            .richiedi_integrazioni(&key, vec!["Documentazione fotografica".into()])
            .await
            .unwrap()
    );
    assert_eq!(f.pratica("PDC-2").stato, StatoIstanza::Integrazione);
    assert_eq!(f.scadenza("PDC-2", Scadenza::Decisione), dopo_la_prima);
    // The portal is told the term runs on.
    f.al_portale("PDC-2", "the second request and its note", |p| {
        p.richieste.len() == 2
            && p.stato == Some(StatoIstanza::Integrazione)
            && p.stati
                .last()
                .and_then(|s| s.nota.as_deref())
                .is_some_and(|n| n.contains("non si interrompe"))
    })
    .await;
    // Integrations whose attachment is not the document they declare are refused, told to
    // the portal; the practice still waits.
    f.portale
        .integra(
            &Federation::turin(),
            &Integrazione {
                pratica: "PDC-2".into(),
                allegati: Elenco::new(vec![documento("foto.pdf", b"%PDF-1.7 foto")]).unwrap(),
                nota: None,
                contenuti: vec![contenuto("foto.pdf", b"%PDF-1.7 fotO")],
            },
        )
        .await
        .unwrap();
    f.al_portale("PDC-2", "the refused integrations", |p| {
        p.stati
            .last()
            .and_then(|s| s.nota.as_deref())
            .is_some_and(|n| n.starts_with("Integrazione respinta: allegato-impronta: foto.pdf"))
    })
    .await;
    assert_eq!(f.pratica("PDC-2").stato, StatoIstanza::Integrazione);
    f.clock.set(datetime!(2026-04-15 09:00 UTC));
    f.integra("PDC-2", "foto.pdf", b"%PDF-1.7 foto").await;
    let c = f
        .al_comune("PDC-2", "the second integrations", |p| {
            p.stato == StatoIstanza::Istruttoria
        })
        .await;
    assert_eq!(c.termine.as_ref().unwrap().decorre, data("2026-03-20"));
    assert_eq!(f.scadenza("PDC-2", Scadenza::Decisione), dopo_la_prima);

    // Silence assents on the term of the first interruption; the fees are still due.
    f.clock.set(datetime!(2026-06-19 00:00 UTC));
    let c = f
        .al_comune("PDC-2", "silence assents", |p| {
            p.stato == StatoIstanza::Rilasciata
        })
        .await;
    assert_eq!(c.silenzio_assenso, Some(data("2026-06-19")));
    let prov = c.provvedimento.unwrap();
    assert!(
        prov.prescrizioni
            .iter()
            .any(|p| p.contains("Restano dovuti gli oneri di €7846.00")),
        "{prov:?}"
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn integrations_that_never_come_archive_the_permit() {
    let f = Federation::start().await;
    f.presenta(&istanza("PDC-A", Titolo::PermessoDiCostruire, false))
        .await;
    f.clock.set(datetime!(2026-03-10 09:00 UTC));
    f.sportello
        .richiedi_integrazioni(&Federation::key("PDC-A"), vec!["Computo metrico".into()])
        .await
        .unwrap();
    // 30 days to answer: by 9 April.
    assert_eq!(
        f.scadenza("PDC-A", Scadenza::Integrazione),
        Some(datetime!(2026-04-10 00:00 UTC))
    );
    f.clock.set(datetime!(2026-04-10 00:00 UTC));
    let portal = f
        .al_portale("PDC-A", "the archiving reaches the portal", |p| {
            p.stato == Some(StatoIstanza::Archiviata) && p.provvedimento.is_some()
        })
        .await;
    let prov = portal.provvedimento.unwrap();
    assert_eq!(prov.esito, EsitoProvvedimento::Archiviato);
    assert_eq!(prov.motivi[0].codice, "integrazioni-mancanti");
    assert!(
        prov.motivi[0].descrizione.contains("2026-04-09"),
        "{prov:?}"
    );
    let c = f.pratica("PDC-A");
    assert!(c.conclusa());
    // No term is left: the term of the decision stayed interrupted.
    for s in [Scadenza::Decisione, Scadenza::Integrazione] {
        assert_eq!(f.scadenza("PDC-A", s), None);
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scia_starts_works_at_once_and_is_checked_within_thirty_days() {
    let f = Federation::start().await;
    let p = f.presenta(&istanza("SCIA-1", Titolo::Scia, false)).await;
    assert_eq!(p.termine, Some(data("2026-04-01")));
    let portal = f
        .al_portale("SCIA-1", "works may start", |p| {
            p.stato == Some(StatoIstanza::Istruttoria)
        })
        .await;
    assert!(
        portal.stati[0]
            .nota
            .as_deref()
            .is_some_and(|n| n.contains("i lavori possono iniziare")),
        "{:?}",
        portal.stati
    );
    assert_eq!(
        f.scadenza("SCIA-1", Scadenza::Controllo),
        Some(datetime!(2026-04-02 00:00 UTC))
    );
    let portal = f
        .al_portale("SCIA-1", "the fees", |p| p.oneri.is_some())
        .await;
    assert_eq!(portal.oneri.unwrap().diritti_segreteria, euro(100));
    // Not a permit: no integrations, no decision.
    assert!(matches!(
        f.sportello
            .richiedi_integrazioni(&Federation::key("SCIA-1"), vec!["x".into()])
            .await,
        Err(ErroreSportello::NonAmmessa(_))
    ));
    // Checked on 20 March: works must stop.
    f.clock.set(datetime!(2026-03-20 09:00 UTC));
    let e = f
        .sportello
        .controlla_scia(
            &Federation::key("SCIA-1"),
            EsitoControllo::Divieto,
            Vec::new(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("reasons"), "{e}");
    f.sportello
        .controlla_scia(
            &Federation::key("SCIA-1"),
            EsitoControllo::Divieto,
            vec![motivo(
                "distanze",
                "L'ampliamento non rispetta le distanze dai confini.",
            )],
        )
        .await
        .unwrap();
    let portal = f
        .al_portale("SCIA-1", "the check reaches the portal", |p| {
            p.controllo.is_some() && p.stato == Some(StatoIstanza::Negata)
        })
        .await;
    assert_eq!(portal.controllo.unwrap().esito, EsitoControllo::Divieto);
    assert_eq!(f.scadenza("SCIA-1", Scadenza::Controllo), None);

    // Another SCIA, left unchecked: after 30 days it stands, and can no longer be checked.
    f.presenta(&istanza("SCIA-2", Titolo::Scia, false)).await;
    assert_eq!(
        f.scadenza("SCIA-2", Scadenza::Controllo),
        Some(datetime!(2026-04-20 00:00 UTC))
    );
    f.clock.set(datetime!(2026-04-20 00:00 UTC));
    f.al_portale("SCIA-2", "the SCIA stands", |p| {
        p.stato == Some(StatoIstanza::Rilasciata)
    })
    .await;
    let e = f
        .sportello
        .controlla_scia(
            &Federation::key("SCIA-2"),
            EsitoControllo::Regolare,
            Vec::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ErroreSportello::NonAmmessa(_)), "{e}");
    f.stop().await;
}

/// A state lands after a later one (the office submits from a handler's outbox and from its
/// own task): the portal shows the latest by the comune's clock, and keeps the history in time
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn states_that_arrive_backwards_leave_the_latest_at_the_portal() {
    let f = Federation::start().await;
    // Protocolled at 2026-03-02 09:00, the federation's start.
    f.presenta(&istanza("SCIA-3", Titolo::Scia, false)).await;
    f.al_portale("SCIA-3", "the SCIA under way", |p| {
        p.stato == Some(StatoIstanza::Istruttoria)
    })
    .await;
    let portal: EntityId = PORTAL.parse().unwrap();
    let stato = |stato, il: &str, nota: &str| Stato {
        pratica: "SCIA-3".into(),
        stato,
        il: Istante::parse(il).unwrap(),
        nota: Some(nota.into()),
    };
    for s in [
        stato(
            StatoIstanza::Rilasciata,
            "2026-04-20T00:00:00Z",
            "consolidata",
        ),
        stato(
            StatoIstanza::Integrazione,
            "2026-03-10T10:00:00Z",
            "integrare",
        ),
    ] {
        let e = typed::message(&f.comune, &portal, Profile::Oneway, None, None, &s).unwrap();
        f.comune.submit(&e).await.unwrap();
    }
    let p = f
        .al_portale("SCIA-3", "both states at the portal", |p| {
            p.stati.len() == 3
        })
        .await;
    assert_eq!(p.stato, Some(StatoIstanza::Rilasciata), "{:?}", p.stati);
    let order: Vec<StatoIstanza> = p.stati.iter().map(|s| s.stato).collect();
    assert_eq!(
        order,
        [
            StatoIstanza::Istruttoria,
            StatoIstanza::Integrazione,
            StatoIstanza::Rilasciata
        ]
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cila_is_registered_at_once() {
    let f = Federation::start().await;
    let p = f.presenta(&istanza("CILA-1", Titolo::Cila, false)).await;
    assert!(p.protocollo.is_some());
    assert_eq!(p.termine, None);
    let c = f.pratica("CILA-1");
    assert_eq!(c.stato, StatoIstanza::Istruttoria);
    assert!(c.conclusa());
    assert_eq!(c.termine, None);
    for s in [Scadenza::Decisione, Scadenza::Controllo] {
        assert_eq!(f.scadenza("CILA-1", s), None);
    }
    let portal = f
        .al_portale("CILA-1", "the registration and its fees", |p| {
            p.oneri.is_some() && p.stato.is_some()
        })
        .await;
    assert!(
        portal.stati[0]
            .nota
            .as_deref()
            .is_some_and(|n| n.contains("CILA registrata")),
        "{:?}",
        portal.stati
    );
    // Only the secretariat fees.
    assert_eq!(portal.oneri.unwrap().totale, euro(50));
    assert!(matches!(
        f.sportello
            .decidi(
                &Federation::key("CILA-1"),
                EsitoProvvedimento::Rilasciato,
                Vec::new(),
                Vec::new()
            )
            .await,
        Err(ErroreSportello::NonAmmessa(_))
    ));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_submission_whose_attachment_does_not_match_its_digest_is_refused_with_the_reason() {
    let f = Federation::start().await;
    let mut altered = istanza("PDC-X", Titolo::PermessoDiCostruire, false);
    altered.contenuti = vec![contenuto(
        "relazione.pdf",
        b"%PDF-1.7 relazione tecnica asseveratA",
    )];
    let p = f.presenta(&altered).await;
    assert_eq!((p.protocollo, p.termine), (None, None));
    assert_eq!(p.motivi.len(), 1);
    assert_eq!(p.motivi[0].codice, "allegato-impronta");
    assert!(
        p.motivi[0].descrizione.starts_with("relazione.pdf:")
            && p.motivi[0].descrizione.contains(&sha256(RELAZIONE)),
        "{}",
        p.motivi[0].descrizione
    );
    assert!(
        f.sportello
            .pratica(&Federation::key("PDC-X"))
            .unwrap()
            .is_none()
    );
    // The portal keeps the refusal; the protocol lost no number to it.
    let portal = f.portale.pratica("PDC-X").unwrap().unwrap();
    assert_eq!(
        portal.protocollo.unwrap().motivi[0].codice,
        "allegato-impronta"
    );
    let ok = f
        .presenta(&istanza("PDC-OK", Titolo::PermessoDiCostruire, false))
        .await;
    assert_eq!(ok.protocollo.unwrap().numero, "EDI/2026/000001");
    // The same application again is the same protocol, not a second one.
    let again = f
        .presenta(&istanza("PDC-OK", Titolo::PermessoDiCostruire, false))
        .await;
    assert_eq!(again.protocollo.unwrap().numero, "EDI/2026/000001");
    f.stop().await;
}

#[test]
fn snodo_connector_runs_the_building_back_offices_from_their_configurations() {
    use snodo_connectors::config::{AdapterSection, Config as ConnectorConfig};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/edilizia");
    for (file, name) in [
        ("edilizia-001272.toml", "edilizia"),
        ("portale.toml", "portale-edilizia"),
    ] {
        let config = ConnectorConfig::load(&dir.join(file)).unwrap();
        let AdapterSection::Reference { back_office, .. } = &config.adapter else {
            panic!("{file}: {:?}", config.adapter)
        };
        assert_eq!(back_office, name);
    }
    let tmp = tempfile::tempdir().unwrap();
    for (file, from, to, says) in [
        (
            "edilizia-001272.toml",
            "quota_costo = 500",
            "quota_costo = 10001",
            "tariffe[0].tariffe.quota_costo",
        ),
        (
            "edilizia-001272.toml",
            "responsabile = ",
            "responsabili = ",
            "unknown field `responsabili`",
        ),
        ("portale.toml", "nodo = ", "nodi = ", "unknown field `nodi`"),
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(text.contains(from), "{file}: {from}");
        let path = tmp.path().join(file);
        std::fs::write(&path, text.replace(from, to)).unwrap();
        let e = ConnectorConfig::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("adapter.data") && e.contains(says),
            "{file}: {e}"
        );
    }
}
