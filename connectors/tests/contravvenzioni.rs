//! Traffic fines end to end over a real hub on 127.0.0.1 (real TLS, signed envelopes, bodies
//! checked against the catalog): the comune's police office, the prefecture, the payment
//! provider and the portal as reference back offices, each with its own store and pull loop,
//! on one `ManualClock` that the tests move by days.

mod common;

use std::sync::Arc;
use std::time::Duration;

use snodo_broker::cli::serve::Running;
use snodo_connectors::clock::SharedClock;
use snodo_connectors::contravvenzioni::comando::{Comando, Fascicolo, Impostazioni, NuovoVerbale};
use snodo_connectors::contravvenzioni::portale::{ErrorePagamento, Portale};
use snodo_connectors::contravvenzioni::prefettura::{
    ErrorePrefettura, Impostazioni as PrefetturaImpostazioni, Prefettura, Scelta,
};
use snodo_connectors::dispatch::PullConfig;
use snodo_connectors::pagamenti::{Creditore, Impostazioni as NodoImpostazioni, Nodo};
use snodo_connectors::{Clock, Dispatcher, HubClient, HubClientConfig, ManualClock, Store};
use snodo_envelopes::{EntityId, Profile, Recipient};
use snodo_schemas::formats::{CodiceFiscale, CodiceIstat, Data, Importo, Istante, Targa};
use snodo_schemas::services::dati::Soggetto;
use snodo_schemas::services::mobilita_contravvenzioni::{
    Autorita, AvvisoVerbale, Criterio, DatiVerbale, EsitoDecisione, Ricorso, RicorsoRicevuta,
    StatoVerbale, TipoAvviso, Verbale,
};
use snodo_schemas::services::pagamenti::{Canale, ErroreAvviso, StatoPosizione};
use time::OffsetDateTime;
use time::macros::datetime;
use tokio::sync::watch;

const TURIN: &str = "comune:001272";
const PORTAL: &str = "portale:comunefacile";
const NODO: &str = "pagopa:nodo";
const PREFECTURE: &str = "prefettura:TO";
const CF: &str = "RSSMRA85T10A562S";
const TURIN_CF: &str = "00514490010";
const PREFECTURE_CF: &str = "80089440012";

const REGISTRY: &str = include_str!("../examples/contravvenzioni/hub-services.toml");

/// The day every fine here is notified (day 0).
const NOTIFIED: OffsetDateTime = datetime!(2026-03-02 09:00 UTC);

/// A federation of four and the hub: the police office, the prefecture, the provider and the
/// portal running.
struct Federation {
    dir: tempfile::TempDir,
    hub: Running,
    clock: Arc<ManualClock>,
    nodo: Arc<Nodo>,
    comando: Arc<Comando>,
    prefettura: Arc<Prefettura>,
    portale: Arc<Portale>,
    stop: watch::Sender<bool>,
}

fn cf(s: &str) -> CodiceFiscale {
    CodiceFiscale::parse(s).unwrap()
}

fn data(s: &str) -> Data {
    Data::parse(s).unwrap()
}

fn targa(s: &str) -> Targa {
    Targa::parse(s).unwrap()
}

fn turin() -> CodiceIstat {
    CodiceIstat::parse("001272").unwrap()
}

fn cents(c: u64) -> Importo {
    Importo::centesimi(c)
}

/// Day `n` after notification, at 10:00.
fn day(n: i64) -> OffsetDateTime {
    NOTIFIED + time::Duration::days(n) + time::Duration::hours(1)
}

fn at(t: OffsetDateTime) -> Istante {
    snodo_connectors::back_office::istante(t).unwrap()
}

/// Speeding (art. 142 c. 8): €173 to €695, €14.70 of costs; with `sospensione`, the licence
/// is suspended (no reduced payment).
fn speeding(numero: &str, plate: &str, il: &str, sospensione: bool) -> NuovoVerbale {
    NuovoVerbale {
        numero: numero.into(),
        il: Istante::parse(il).unwrap(),
        luogo: "Corso Francia 100, Torino".into(),
        norma: "art. 142 c. 8 CdS".into(),
        descrizione: "Velocità superiore di oltre 10 km/h al limite".into(),
        targa: targa(plate),
        trasgressore: Soggetto {
            codice_fiscale: cf(CF),
            denominazione: "Mario Rossi".into(),
            indirizzo: None,
            email: None,
        },
        minimo: Importo::euro(173).unwrap(),
        massimo: Importo::euro(695).unwrap(),
        spese: cents(1470),
        punti: Some(3),
        sanzione_accessoria: sospensione,
    }
}

/// The reduced amount: 173 × 70% + 14.70.
const REDUCED: Importo = Importo::centesimi(13_580);
/// The minimum: 173 + 14.70.
const MINIMUM: Importo = Importo::centesimi(18_770);
/// Half the maximum: 347.50 + 14.70.
const INCREASED: Importo = Importo::centesimi(36_220);
/// Twice the minimum: 346 + 14.70.
const INJUNCTION: Importo = Importo::centesimi(36_070);

impl Federation {
    async fn start() -> Federation {
        let dir = tempfile::tempdir().unwrap();
        // The payments' registry names the prefectures too (creditors of fines' injunctions).
        let (hub, url) =
            common::service_hub(dir.path(), &[TURIN, PORTAL, NODO, PREFECTURE], REGISTRY).await;
        let client = |entity: &str| common::service_client(dir.path(), &url, entity);
        let clock = Arc::new(ManualClock::new(NOTIFIED));
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
                creditori: vec![
                    Creditore {
                        entity: TURIN.parse().unwrap(),
                        codice_fiscale: cf(TURIN_CF),
                        denominazione: "Comune di Torino".into(),
                        segregazione: 1,
                    },
                    Creditore {
                        entity: PREFECTURE.parse().unwrap(),
                        codice_fiscale: cf(PREFECTURE_CF),
                        denominazione: "Prefettura di Torino".into(),
                        segregazione: 2,
                    },
                ],
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
        let comando = Comando::open(
            c.clone(),
            store.clone(),
            shared.clone(),
            Impostazioni {
                comune: turin(),
                denominazione: "Comune di Torino".into(),
                codice_fiscale: cf(TURIN_CF),
                iban: "IT60X0542811101000000123456".into(),
                nodo: NODO.parse().unwrap(),
                portale: PORTAL.parse().unwrap(),
                prefettura: PREFECTURE.parse().unwrap(),
            },
        )
        .unwrap();
        let d = Arc::new(
            comando
                .install(Dispatcher::builder())
                .build(c, store)
                .unwrap(),
        );
        tokio::spawn(d.run_pull(pull, shutdown.clone()));
        tokio::spawn(comando.clone().run(shutdown.clone()));

        let store = Store::open(&dir.path().join("prefettura")).unwrap();
        let c = client(PREFECTURE);
        let prefettura = Prefettura::open(
            c.clone(),
            store.clone(),
            shared.clone(),
            PrefetturaImpostazioni {
                denominazione: "Prefettura di Torino".into(),
                codice_fiscale: cf(PREFECTURE_CF),
                iban: "IT02L1234512345123456789012".into(),
                nodo: NODO.parse().unwrap(),
            },
        )
        .unwrap();
        let d = Arc::new(
            prefettura
                .install(Dispatcher::builder())
                .build(c, store)
                .unwrap(),
        );
        tokio::spawn(d.run_pull(pull, shutdown.clone()));
        tokio::spawn(prefettura.clone().run(shutdown.clone()));

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
            comando,
            prefettura,
            portale,
            stop,
        }
    }

    fn turin_entity() -> EntityId {
        TURIN.parse().unwrap()
    }

    /// Notifies `n` on day 0 and waits until the portal has it.
    async fn notifica(&self, n: NuovoVerbale) -> DatiVerbale {
        self.clock.set(NOTIFIED);
        let numero = n.numero.clone();
        let v = self.comando.notifica(n, data("2026-03-02")).await.unwrap();
        for _ in 0..200 {
            if self
                .portale
                .verbali(&cf(CF))
                .unwrap()
                .iter()
                .any(|v| v.numero == numero)
            {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fine {numero} never reached the portal");
    }

    async fn cerca(&self, criterio: Criterio) -> Vec<DatiVerbale> {
        self.portale
            .cerca(&Federation::turin_entity(), &turin(), criterio)
            .await
            .unwrap()
    }

    /// Fine `v` as the police office answers a lookup by number today.
    async fn verbale(&self, v: &DatiVerbale) -> DatiVerbale {
        let mut found = self.cerca(by_number(v)).await;
        assert_eq!(found.len(), 1, "{found:?}");
        found.pop().unwrap()
    }

    /// Pays fine `v` today with the notice that fits the day.
    async fn paga(&self, v: &DatiVerbale) -> Result<AvvisoVerbale, ErrorePagamento> {
        self.portale
            .paga(
                &Federation::turin_entity(),
                &turin(),
                by_number(v),
                Canale::Carta,
                at(self.clock.now()),
            )
            .await
            .map(|(a, _)| a)
    }

    async fn ricorre(&self, v: &DatiVerbale, autorita: Autorita) -> RicorsoRicevuta {
        let oggi = Data::from_date(self.clock.now().date()).unwrap();
        self.portale
            .ricorri(
                &Federation::turin_entity(),
                &Ricorso {
                    pratica: format!("RIC-{}-{autorita:?}", v.numero),
                    numero_verbale: v.numero.clone(),
                    comune: turin(),
                    autorita,
                    ricorrente: cf(CF),
                    motivi: "Il limite non era segnalato.".into(),
                    allegati: Vec::new(),
                    presentato_il: oggi,
                },
            )
            .await
            .unwrap()
    }

    /// Waits until the police office's file of `numero` satisfies `ok`.
    async fn fascicolo(&self, numero: &str, ok: impl Fn(&Fascicolo) -> bool) -> Fascicolo {
        let mut last = None;
        for _ in 0..300 {
            last = self.comando.fascicolo(numero).unwrap();
            if last.as_ref().is_some_and(&ok) {
                return last.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fine {numero} never got there: {last:?}");
    }

    /// Waits until the portal saw fine `numero` reach `stato`.
    async fn portale_vede(&self, numero: &str, stato: StatoVerbale) {
        for _ in 0..200 {
            if self
                .portale
                .stati(&turin(), numero)
                .unwrap()
                .iter()
                .any(|s| s.stato == stato)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the portal never saw {numero} become {stato:?}");
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        self.hub.shutdown().await.unwrap();
        drop(self.dir);
    }
}

fn by_number(v: &DatiVerbale) -> Criterio {
    Criterio::Verbale {
        numero: v.numero.clone(),
        targa: v.targa.clone(),
        data: Data::from_date(v.il.datetime().date()).unwrap(),
    }
}

fn notice(v: &DatiVerbale, tipo: TipoAvviso) -> AvvisoVerbale {
    v.avvisi
        .iter()
        .find(|a| a.tipo == tipo)
        .cloned()
        .unwrap_or_else(|| panic!("fine {} has no {tipo:?} notice", v.numero))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paid_on_day_3_30_and_70_costs_reduced_minimum_and_increased() {
    let f = Federation::start().await;
    // A fine is refused when its number or its amounts are wrong.
    for (numero, minimo, says) in [
        ("V/1", 173, "number"),
        ("", 173, "number"),
        ("V-0", 900, "above the maximum"),
    ] {
        let mut n = speeding(numero, "AB123CD", "2026-02-27T08:30:00Z", false);
        n.minimo = Importo::euro(minimo).unwrap();
        let e = f.comando.notifica(n, data("2026-03-02")).await.unwrap_err();
        assert!(e.to_string().contains(says) && !e.is_retryable(), "{e}");
    }
    let a = f
        .notifica(speeding("V-1", "AB123CD", "2026-02-27T08:30:00Z", false))
        .await;
    let b = f
        .notifica(speeding("V-2", "EF456GH", "2026-02-27T09:30:00Z", false))
        .await;
    let c = f
        .notifica(speeding("V-3", "LM789NP", "2026-02-28T18:00:00Z", false))
        .await;
    // Each carries two notices: reduced for 5 days, ordinary for 60.
    let ridotto = notice(&a, TipoAvviso::Ridotto);
    assert_eq!(
        (ridotto.importo, ridotto.scadenza.as_str()),
        (REDUCED, "2026-03-07")
    );
    let ordinario = notice(&a, TipoAvviso::Ordinario);
    assert_eq!(
        (ordinario.importo, ordinario.scadenza.as_str()),
        (MINIMUM, "2026-05-01")
    );
    assert_eq!(ordinario.ente, cf(TURIN_CF));
    assert!(ridotto.nav.as_str().starts_with("301"), "{}", ridotto.nav);

    // Day 3: the reduced amount.
    f.clock.set(day(3));
    assert_eq!(
        f.verbale(&a).await.dovuto.unwrap().tipo,
        TipoAvviso::Ridotto
    );
    let paid = f.paga(&a).await.unwrap();
    assert_eq!((paid.tipo, paid.importo), (TipoAvviso::Ridotto, REDUCED));
    let fa = f
        .fascicolo("V-1", |x| x.verbale.stato == StatoVerbale::PagatoRidotto)
        .await;
    assert_eq!(fa.pagamento.unwrap().importo, REDUCED);
    f.portale_vede("V-1", StatoVerbale::PagatoRidotto).await;
    assert_eq!(f.verbale(&a).await.dovuto, None, "nothing more is due");
    assert!(matches!(
        f.paga(&a).await,
        Err(ErrorePagamento::NienteDovuto(_))
    ));

    // Day 30: the reduced notice has expired; the minimum is due.
    f.clock.set(day(30));
    let late = f
        .portale
        .paga_avviso(
            &notice(&b, TipoAvviso::Ridotto),
            REDUCED,
            Canale::Carta,
            at(day(30)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            late,
            ErrorePagamento::Avviso {
                errore: ErroreAvviso::Scaduto,
                ..
            }
        ),
        "{late}"
    );
    let paid = f.paga(&b).await.unwrap();
    assert_eq!((paid.tipo, paid.importo), (TipoAvviso::Ordinario, MINIMUM));
    f.fascicolo("V-2", |x| x.verbale.stato == StatoVerbale::Pagato)
        .await;
    f.portale_vede("V-2", StatoVerbale::Pagato).await;

    // Day 60 the minimum still; on day 61 the unpaid fine becomes enforceable with a notice
    // for half the maximum plus costs.
    f.clock.set(day(60));
    assert_eq!(
        f.verbale(&c).await.dovuto.unwrap().importo,
        MINIMUM,
        "day 60 is within the term"
    );
    f.clock.set(day(70));
    let fc = f
        .fascicolo("V-3", |x| x.verbale.stato == StatoVerbale::Esecutivo)
        .await;
    let maggiorato = notice(&fc.verbale, TipoAvviso::Maggiorato);
    assert_eq!(maggiorato.importo, INCREASED);
    f.portale_vede("V-3", StatoVerbale::Esecutivo).await;
    let paid = f.paga(&c).await.unwrap();
    assert_eq!(
        (paid.tipo, paid.importo),
        (TipoAvviso::Maggiorato, INCREASED)
    );
    let fc = f
        .fascicolo("V-3", |x| x.verbale.stato == StatoVerbale::Pagato)
        .await;
    assert_eq!(fc.pagamento.unwrap().il.as_str(), "2026-05-11");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lookup_by_plate_and_period_returns_exactly_that_vehicles_fines() {
    let f = Federation::start().await;
    for (n, plate, il) in [
        ("V-10", "AB123CD", "2026-01-31T23:30:00Z"),
        ("V-11", "AB123CD", "2026-02-01T08:00:00Z"),
        ("V-12", "AB123CD", "2026-02-20T12:00:00Z"),
        ("V-13", "EF456GH", "2026-02-15T12:00:00Z"),
        ("V-14", "AB123CD", "2026-03-01T07:00:00Z"),
    ] {
        f.notifica(speeding(n, plate, il, n == "V-12")).await;
    }
    f.clock.set(day(2));
    let found = f
        .cerca(Criterio::Targa {
            targa: targa("AB123CD"),
            dal: data("2026-02-01"),
            al: data("2026-02-28"),
        })
        .await;
    let numbers: Vec<&str> = found.iter().map(|v| v.numero.as_str()).collect();
    assert_eq!(numbers, ["V-11", "V-12"]);
    // Each with the amount due today: reduced, but the minimum where the licence is
    // suspended.
    let due: Vec<(TipoAvviso, Importo)> = found
        .iter()
        .map(|v| {
            let d = v.dovuto.as_ref().unwrap();
            (d.tipo, d.importo)
        })
        .collect();
    assert_eq!(
        due,
        [
            (TipoAvviso::Ridotto, REDUCED),
            (TipoAvviso::Ordinario, MINIMUM)
        ]
    );
    // By number, plate and date: that one; a wrong date or plate: none.
    let v11 = &found[0];
    assert_eq!(f.cerca(by_number(v11)).await.len(), 1);
    for criterio in [
        Criterio::Verbale {
            numero: "V-11".into(),
            targa: targa("AB123CD"),
            data: data("2026-02-02"),
        },
        Criterio::Verbale {
            numero: "V-11".into(),
            targa: targa("EF456GH"),
            data: data("2026-02-01"),
        },
        Criterio::Targa {
            targa: targa("ZZ999ZZ"),
            dal: data("2026-01-01"),
            al: data("2026-12-31"),
        },
    ] {
        assert!(f.cerca(criterio.clone()).await.is_empty(), "{criterio:?}");
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_reduced_payment_with_licence_suspension_or_after_an_appeal_and_late_appeals_are_refused()
 {
    let f = Federation::start().await;
    // Licence suspended: no reduced notice at all; paying the reduced amount on day 2 is
    // refused, the minimum is due.
    let s = f
        .notifica(speeding("V-20", "AB123CD", "2026-02-27T08:30:00Z", true))
        .await;
    assert!(s.avvisi.iter().all(|a| a.tipo != TipoAvviso::Ridotto));
    f.clock.set(day(2));
    let v = f.verbale(&s).await;
    let dovuto = v.dovuto.clone().unwrap();
    assert_eq!(
        (dovuto.tipo, dovuto.importo),
        (TipoAvviso::Ordinario, MINIMUM)
    );
    let refused = f
        .portale
        .paga_avviso(&dovuto, REDUCED, Canale::Carta, at(day(2)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ErrorePagamento::Avviso {
                errore: ErroreAvviso::ImportoDiverso,
                ..
            }
        ),
        "{refused}"
    );
    // Nor can the comune send the portal a fine with a reduced notice where the licence is
    // suspended: the hub refuses the body.
    let mut bad = v.clone();
    bad.dovuto = None;
    bad.avvisi = snodo_schemas::formats::Elenco::new(vec![
        AvvisoVerbale {
            tipo: TipoAvviso::Ridotto,
            ..dovuto.clone()
        },
        dovuto.clone(),
    ])
    .unwrap();
    let url = format!("https://127.0.0.1:{}", f.hub.addr.port());
    let pki_dir = f.dir.path().join("pki");
    let comune = HubClient::new(&HubClientConfig::new(
        url,
        pki_dir.join("ca.crt"),
        pki_dir.join("comune-001272.crt"),
        pki_dir.join("comune-001272.key"),
    ))
    .unwrap();
    let env = comune
        .envelope(
            Recipient::Entity(PORTAL.parse().unwrap()),
            "mobilita.contravvenzioni",
            "verbale",
        )
        .profile(Profile::Oneway)
        .json(serde_json::to_value(Verbale { verbale: bad }).unwrap())
        .build()
        .unwrap();
    let err = comune.submit(&env).await.unwrap_err();
    assert_eq!(err.code(), Some("body-schema-invalid"), "{err}");
    assert!(err.to_string().contains("licence suspension"), "{err}");

    // An appeal on day 2 excludes the reduced payment: its notice is withdrawn.
    let a = f
        .notifica(speeding("V-21", "EF456GH", "2026-02-27T09:30:00Z", false))
        .await;
    f.clock.set(day(2));
    let r = f.ricorre(&a, Autorita::Prefetto).await;
    assert!(r.motivi.is_empty(), "{r:?}");
    assert!(r.protocollo.unwrap().numero.starts_with("PL/2026/"));
    f.fascicolo("V-21", |x| x.verbale.stato == StatoVerbale::RicorsoPrefetto)
        .await;
    let ridotto = notice(&a, TipoAvviso::Ridotto);
    for _ in 0..200 {
        if f.nodo.posizione(&ridotto.nav).unwrap().unwrap().stato == StatoPosizione::Invalida {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = f
        .portale
        .paga_avviso(&ridotto, REDUCED, Canale::Carta, at(day(2)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ErrorePagamento::Avviso {
                errore: ErroreAvviso::Annullato,
                ..
            }
        ),
        "{refused}"
    );
    assert_eq!(f.verbale(&a).await.dovuto, None);
    f.portale_vede("V-21", StatoVerbale::RicorsoPrefetto).await;
    // A second appeal on the same fine is refused.
    let again = f.ricorre(&a, Autorita::GiudiceDiPace).await;
    assert_eq!(again.motivi[0].codice, "ricorso-gia-presentato");

    // Late appeals: day 31 to the Justice of the Peace, day 61 to the Prefect; day 30 to
    // the Justice of the Peace is in time.
    let late = f
        .notifica(speeding("V-22", "LM789NP", "2026-02-28T18:00:00Z", false))
        .await;
    let in_time = f
        .notifica(speeding("V-23", "LM789NP", "2026-02-28T19:00:00Z", false))
        .await;
    f.clock.set(day(30));
    let ok = f.ricorre(&in_time, Autorita::GiudiceDiPace).await;
    assert!(ok.protocollo.is_some() && ok.motivi.is_empty(), "{ok:?}");
    f.fascicolo("V-23", |x| x.verbale.stato == StatoVerbale::RicorsoGiudice)
        .await;
    f.clock.set(day(31));
    let r = f.ricorre(&late, Autorita::GiudiceDiPace).await;
    assert_eq!(r.protocollo, None);
    assert_eq!(r.motivi[0].codice, "fuori-termine");
    assert!(
        r.motivi[0].descrizione.contains("within 30 days")
            && r.motivi[0].descrizione.contains("day 31"),
        "{}",
        r.motivi[0].descrizione
    );
    f.clock.set(day(61));
    let r = f.ricorre(&late, Autorita::Prefetto).await;
    assert_eq!(r.protocollo, None);
    assert_eq!(r.motivi[0].codice, "fuori-termine");
    assert!(
        r.motivi[0].descrizione.contains("within 60 days")
            && r.motivi[0].descrizione.contains("day 61"),
        "{}",
        r.motivi[0].descrizione
    );
    // Refused appeals change nothing: unpaid past 60 days, the fine is enforceable.
    f.fascicolo("V-22", |x| x.verbale.stato == StatoVerbale::Esecutivo)
        .await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_prefect_rejects_with_twice_the_minimum_and_silence_accepts_after_120_days() {
    let f = Federation::start().await;
    let silent = f
        .notifica(speeding("V-30", "AB123CD", "2026-02-27T08:30:00Z", false))
        .await;
    let rejected = f
        .notifica(speeding("V-31", "EF456GH", "2026-02-27T09:30:00Z", false))
        .await;
    let opposed = f
        .notifica(speeding("V-32", "LM789NP", "2026-02-27T10:30:00Z", false))
        .await;
    let opposed_late = f
        .notifica(speeding("V-33", "LM789NP", "2026-02-27T11:30:00Z", false))
        .await;
    // All appealed to the Prefect on day 10; the office forwards them.
    f.clock.set(day(10));
    for v in [&silent, &rejected, &opposed, &opposed_late] {
        let r = f.ricorre(v, Autorita::Prefetto).await;
        assert!(r.motivi.is_empty(), "{r:?}");
    }
    let turin_entity = Federation::turin_entity();
    let key_silent = Prefettura::chiave(&turin_entity, "V-30");
    let key_rejected = Prefettura::chiave(&turin_entity, "V-31");
    for key in [&key_silent, &key_rejected] {
        for _ in 0..200 {
            if f.prefettura.pratica(key).unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let p = f.prefettura.pratica(key).unwrap().expect("forwarded");
        assert_eq!(p.ricevuto_il.as_str(), "2026-03-12");
    }

    // Day 40: the Prefect rejects V-31; less than twice the minimum is refused.
    f.clock.set(day(40));
    let e = f
        .prefettura
        .decidi(
            &key_rejected,
            Scelta::Respinge {
                importo: Some(MINIMUM),
            },
            "Infondato.",
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ErrorePrefettura::SottoIlMinimo { .. }), "{e}");
    let d = f
        .prefettura
        .decidi(
            &key_rejected,
            Scelta::Respinge { importo: None },
            "Il limite era regolarmente segnalato.",
        )
        .await
        .unwrap();
    let EsitoDecisione::Respinto { importo, nav, .. } = &d.esito else {
        panic!("{d:?}")
    };
    assert_eq!(*importo, INJUNCTION);
    assert!(
        nav.as_str().starts_with("302"),
        "the prefecture's notice: {nav}"
    );
    let fr = f
        .fascicolo("V-31", |x| x.verbale.stato == StatoVerbale::Ingiunzione)
        .await;
    assert_eq!(fr.decisione.as_ref().unwrap().protocollo, d.protocollo);
    f.portale_vede("V-31", StatoVerbale::Ingiunzione).await;
    // The injunction is what is due, to the prefecture; the citizen pays it.
    let due = f.verbale(&rejected).await.dovuto.unwrap();
    assert_eq!(
        (due.tipo, due.importo, &due.ente),
        (TipoAvviso::Ingiunzione, INJUNCTION, &cf(PREFECTURE_CF))
    );
    let paid = f.paga(&rejected).await.unwrap();
    assert_eq!(paid.nav, *nav);
    for _ in 0..200 {
        if f.prefettura
            .pratica(&key_rejected)
            .unwrap()
            .unwrap()
            .pagato_il
            .is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        f.prefettura
            .pratica(&key_rejected)
            .unwrap()
            .unwrap()
            .pagato_il
            .map(|d| d.as_str().to_owned()),
        Some("2026-04-11".into())
    );
    // The prefecture tells the comune's office, which keeps the fine: paid.
    let fr = f
        .fascicolo("V-31", |x| x.verbale.stato == StatoVerbale::Pagato)
        .await;
    assert_eq!(fr.pagamento.unwrap().importo, INJUNCTION);
    f.portale_vede("V-31", StatoVerbale::Pagato).await;
    assert_eq!(f.verbale(&rejected).await.dovuto, None);

    // Two more rejected on day 40: an injunction may be opposed before the Justice of the
    // Peace within 30 days — on day 70 in time, on day 71 too late.
    for v in [&opposed, &opposed_late] {
        let key = Prefettura::chiave(&turin_entity, &v.numero);
        for _ in 0..200 {
            if f.prefettura.pratica(&key).unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        f.prefettura
            .decidi(&key, Scelta::Respinge { importo: None }, "Infondato.")
            .await
            .unwrap();
        f.fascicolo(&v.numero, |x| x.verbale.stato == StatoVerbale::Ingiunzione)
            .await;
    }
    f.clock.set(day(70));
    let r = f.ricorre(&opposed, Autorita::GiudiceDiPace).await;
    assert!(r.protocollo.is_some() && r.motivi.is_empty(), "{r:?}");
    f.fascicolo("V-32", |x| x.verbale.stato == StatoVerbale::RicorsoGiudice)
        .await;
    f.clock.set(day(71));
    let r = f.ricorre(&opposed_late, Autorita::GiudiceDiPace).await;
    assert_eq!(r.protocollo, None);
    assert_eq!(r.motivi[0].codice, "fuori-termine");
    assert!(
        r.motivi[0].descrizione.contains("injunction")
            && r.motivi[0].descrizione.contains("day 31"),
        "{}",
        r.motivi[0].descrizione
    );

    // V-30 undecided: on day 120 after receipt still under appeal; on day 121 silence has
    // accepted it and the fine is archived.
    f.clock.set(
        datetime!(2026-03-12 00:00 UTC) + time::Duration::days(120) + time::Duration::hours(23),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        f.comando.fascicolo("V-30").unwrap().unwrap().verbale.stato,
        StatoVerbale::RicorsoPrefetto
    );
    f.clock.set(
        datetime!(2026-03-12 00:00 UTC) + time::Duration::days(121) + time::Duration::hours(1),
    );
    let fs = f
        .fascicolo("V-30", |x| x.verbale.stato == StatoVerbale::Archiviato)
        .await;
    let d = fs.decisione.unwrap();
    assert_eq!(d.esito, EsitoDecisione::Accolto {});
    assert!(d.motivazione.contains("120 giorni"), "{}", d.motivazione);
    f.portale_vede("V-30", StatoVerbale::Archiviato).await;
    // Decided by silence: the Prefect can no longer decide it.
    let e = f
        .prefettura
        .decidi(&key_silent, Scelta::Respinge { importo: None }, "Tardiva.")
        .await
        .unwrap_err();
    assert!(matches!(e, ErrorePrefettura::GiaDecisa(_)), "{e}");
    assert_eq!(f.verbale(&silent).await.dovuto, None);
    f.stop().await;
}

#[test]
fn snodo_connector_runs_the_fines_back_offices_from_their_configurations() {
    use snodo_connectors::config::{AdapterSection, Config as ConnectorConfig};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/contravvenzioni");
    for (file, name) in [
        ("pagopa.toml", "pagopa"),
        ("polizia-001272.toml", "polizia-locale"),
        ("prefettura-TO.toml", "prefettura"),
        ("portale.toml", "portale-contravvenzioni"),
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
            "polizia-001272.toml",
            "prefettura = \"prefettura:TO\"\n",
            "",
            "missing field `prefettura`",
        ),
        (
            "polizia-001272.toml",
            "comune = \"001272\"",
            "comune = \"1272\"",
            "comune",
        ),
        (
            "prefettura-TO.toml",
            "codice_fiscale = \"80089440012\"",
            "codice_fiscale = \"80089440013\"",
            "codice_fiscale",
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
