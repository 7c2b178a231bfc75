//! ZTL permits end to end over a real hub on 127.0.0.1 (real TLS, signed envelopes, bodies
//! checked against the catalog): Turin (its registry office feeding ANPR, and its ZTL office),
//! Cuneo feeding ANPR, ANPR, the motor registry, the payment provider and the portal, each a
//! reference back office with its own store and pull loop, on one `ManualClock`.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, url};
use serde_json::json;
use snodo_broker::cli::serve::{self, Running};
use snodo_broker::config::Config;
use snodo_connectors::back_office::anpr::Anpr;
use snodo_connectors::back_office::comune::{Comune, DatiComune, Via};
use snodo_connectors::back_office::motorizzazione::{
    DatiMotorizzazione, Immatricolazione, Motorizzazione,
};
use snodo_connectors::clock::{Clock, SharedClock};
use snodo_connectors::dispatch::{DispatcherBuilder, PullConfig};
use snodo_connectors::mail::MailConfig;
use snodo_connectors::pagamenti::{Creditore, Impostazioni as NodoImpostazioni, Nodo};
use snodo_connectors::service::Committer;
use snodo_connectors::ztl::portale::{Portale, Vista};
use snodo_connectors::ztl::ufficio::{Impostazioni, RegolaCategoria, Settore, Ufficio};
use snodo_connectors::{Dispatcher, HubClient, HubClientConfig, ManualClock, RetryPolicy, Store};
use snodo_envelopes::pki::{self, KeyType};
use snodo_envelopes::{EntityId, Format};
use snodo_schemas::formats::{
    CodiceFiscale, CodiceFiscalePersona, CodiceIstat, Importo, Istante, Targa,
};
use snodo_schemas::services::anagrafe_variazioni::PosizioneAnagrafica;
use snodo_schemas::services::mobilita_ztl::{
    Categoria, Domanda, DomandaRicevuta, Integrazione, StatoPermesso, TipoDomanda, Veicolo,
};
use snodo_schemas::services::pagamenti::{Canale, StatoPosizione};
use time::macros::datetime;

const TORINO: &str = "comune:001272";
const CUNEO: &str = "comune:004078";
const ANPR: &str = "anpr:ministero";
const MCTC: &str = "mctc:motorizzazione";
const NODO: &str = "pagopa:nodo";
const PORTALE: &str = "portale:comunefacile";
const TORINO_CF: &str = "00514490010";

/// A valid codice fiscale from its first 15 characters.
fn cf(first15: &str) -> String {
    let c = CodiceFiscalePersona::check_letter(first15).unwrap();
    format!("{first15}{c}")
}

/// Mario Rossi lives in Turin, Via Roma 10 (sector A).
fn rossi() -> String {
    cf("RSSMRA80A01L219")
}

/// Luca Bianchi lives in Cuneo.
fn bianchi() -> String {
    cf("BNCLCU80A01D205")
}

/// Anna Verdi, who owns a car Rossi asks a permit for.
fn verdi() -> String {
    cf("VRDNNA80A41L219")
}

fn residente(cf: &str, comune: &str, via: &str, famiglia: &str) -> PosizioneAnagrafica {
    serde_json::from_value(json!({
        "persona": {"codice_fiscale": cf, "cognome": "Cittadino", "nome": "Uno", "sesso": "M",
                    "data_nascita": "1980-01-01", "luogo_nascita": "L219"},
        "indirizzo": {"comune": comune, "via": via, "civico": "10"},
        "famiglia": famiglia,
        "iscritto_dal": "2015-01-01",
    }))
    .unwrap()
}

fn veicolo(targa: &str, intestatario: &str) -> Immatricolazione {
    Immatricolazione {
        targa: Targa::parse(targa).unwrap(),
        veicolo: Veicolo {
            intestatario: CodiceFiscale::parse(intestatario).unwrap(),
            tipo: "autovettura".into(),
            classe_euro: 6,
            alimentazione: "benzina".into(),
        },
    }
}

fn documento(tipo: &str) -> serde_json::Value {
    json!({"tipo": tipo, "nome": "documento.pdf", "media_type": "application/pdf",
           "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
           "dimensione": 48213})
}

/// An application `pratica` of `richiedente` for `targhe` in sector A.
fn domanda(
    pratica: &str,
    categoria: &str,
    richiedente: &str,
    targhe: &[&str],
    periodo: serde_json::Value,
    allegati: &[&str],
) -> Domanda {
    serde_json::from_value(json!({
        "pratica": pratica,
        "comune": "001272",
        "tipo": "rilascio",
        "categoria": categoria,
        "richiedente": richiedente,
        "targhe": targhe,
        "settori": ["A"],
        "periodo": periodo,
        "allegati": allegati.iter().map(|t| documento(t)).collect::<Vec<_>>(),
        "email": "cittadino@example.it",
    }))
    .unwrap()
}

fn euro(e: u64) -> Importo {
    Importo::euro(e).unwrap()
}

/// The hub client, store and committer of `entity`; the store is `state-<entity>` in `dir`.
fn corpo(dir: &Path, hub: &Running, entity: &str) -> (Committer, HubClient, Store) {
    let stem = entity.parse::<EntityId>().unwrap().file_stem();
    let pki = dir.join("pki");
    let mut c = HubClientConfig::new(
        url(hub),
        pki.join("ca.crt"),
        pki.join(format!("{stem}.crt")),
        pki.join(format!("{stem}.key")),
    );
    c.retry = RetryPolicy {
        attempts: 5,
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
    // Turin speaks XML: its answers reach the portal in that form and must be read as well
    // as the JSON ones of the others.
    if entity == TORINO {
        c.format = Format::Xml;
    }
    let client = HubClient::new(&c).unwrap();
    let store = Store::open(&dir.join(format!("state-{stem}"))).unwrap();
    (
        Committer::new(client.clone(), store.clone()).unwrap(),
        client,
        store,
    )
}

/// The pull loop of a dispatcher built from `builder`, until `shutdown`.
fn tira(
    builder: DispatcherBuilder,
    client: HubClient,
    store: Store,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let d = Arc::new(builder.build(client, store).unwrap());
    tokio::spawn(Dispatcher::run_pull(
        d,
        PullConfig {
            batch: 16,
            lease: Duration::from_secs(30),
            idle: Duration::from_millis(20),
        },
        shutdown,
    ))
}

/// The federation: the hub and every body's back office pulling its inbox.
struct Federazione {
    dir: tempfile::TempDir,
    hub: Running,
    clock: ManualClock,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    ufficio: Arc<Ufficio>,
    mctc: Arc<Motorizzazione>,
    nodo: Arc<Nodo>,
    portale: Arc<Portale>,
}

impl Federazione {
    async fn new() -> Federazione {
        let dir = tempfile::tempdir().unwrap();
        // The payments' registry names the prefectures too (creditors of fines' injunctions).
        let ids = [TORINO, CUNEO, ANPR, MCTC, NODO, PORTALE, "prefettura:TO"];
        let entities: Vec<EntityId> = ids.iter().map(|e| e.parse().unwrap()).collect();
        pki::init(&dir.path().join("pki"), &entities, KeyType::P256).unwrap();
        let entities_toml: String = ids
            .iter()
            .map(|e| format!("[[entities]]\nid = \"{e}\"\n"))
            .collect();
        let config = format!(
            "[hub]\nname = \"hub\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\n\
             [tls]\nca = \"pki/ca.crt\"\ncert = \"pki/hub.crt\"\nkey = \"pki/hub.key\"\n\n\
             [journal]\ncheckpoint_interval = \"100ms\"\n\n{entities_toml}\n{}\n{}",
            include_str!("../examples/residenza/hub-services.toml"),
            include_str!("../examples/ztl/hub-services.toml"),
        );
        let path = dir.path().join("snodo.toml");
        std::fs::write(&path, config).unwrap();
        let hub = serve::start(Config::load(&path).unwrap(), Some(path.clone()))
            .await
            .unwrap();
        let clock = ManualClock::new(datetime!(2026-03-02 09:00 UTC));
        let shared: SharedClock = Arc::new(clock.clone());
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        let start = |entity: &str| corpo(dir.path(), &hub, entity);

        // Turin: its registry office (whose feed loads ANPR) and its ZTL office, one entity,
        // one inbox, one dispatcher.
        let (k, client, store) = start(TORINO);
        let anagrafe = Comune::new(
            k.clone(),
            DatiComune {
                stradario: vec![Via {
                    nome: "Via Roma".into(),
                    civici: None,
                }],
                residenti: vec![
                    residente(&rossi(), "001272", "Via Roma", "TO-1"),
                    residente(&verdi(), "001272", "Via Po", "TO-2"),
                ],
                anpr: ANPR.into(),
                ..DatiComune::default()
            },
            shared.clone(),
        )
        .unwrap();
        tasks.extend(anagrafe.start(shutdown.clone()));
        let regola = |categoria, tariffa, documenti: &[&str], giorni| RegolaCategoria {
            categoria,
            tariffa,
            documenti: documenti.iter().map(|d| (*d).to_owned()).collect(),
            giorni_massimi: giorni,
        };
        let ufficio = Ufficio::new(
            k,
            Impostazioni {
                comune: CodiceIstat::parse("001272").unwrap(),
                denominazione: "Comune di Torino".into(),
                codice_fiscale: CodiceFiscale::parse(TORINO_CF).unwrap(),
                iban: "IT60X0542811101000000123456".into(),
                nodo: NODO.parse().unwrap(),
                anpr: ANPR.parse().unwrap(),
                motorizzazione: MCTC.parse().unwrap(),
                settori: vec![
                    Settore {
                        codice: "A".into(),
                        vie: vec!["Via Roma".into(), "Via Garibaldi".into()],
                    },
                    Settore {
                        codice: "B".into(),
                        vie: Vec::new(),
                    },
                ],
                categorie: vec![
                    regola(
                        Categoria::Residente,
                        euro(30),
                        &["carta di circolazione"],
                        None,
                    ),
                    regola(Categoria::Garage, euro(80), &["titolo del box"], None),
                    regola(Categoria::Temporaneo, euro(10), &[], Some(30)),
                ],
                posta: Some(MailConfig {
                    from: "ztl@comune.torino.example.it".into(),
                    smtp: None,
                    directory: Some(dir.path().join("posta-ztl")),
                }),
            },
            shared.clone(),
        )
        .unwrap();
        tasks.extend(ufficio.start(&shutdown));
        let builder = ufficio.install(anagrafe.install(Dispatcher::builder()));
        tasks.push(tira(builder, client, store, shutdown.clone()));

        let (k, client, store) = start(CUNEO);
        let cuneo = Comune::new(
            k,
            DatiComune {
                stradario: vec![Via {
                    nome: "Corso Nizza".into(),
                    civici: None,
                }],
                residenti: vec![residente(&bianchi(), "004078", "Corso Nizza", "CN-1")],
                anpr: ANPR.into(),
                ..DatiComune::default()
            },
            shared.clone(),
        )
        .unwrap();
        tasks.extend(cuneo.start(shutdown.clone()));
        tasks.push(tira(
            cuneo.install(Dispatcher::builder()),
            client,
            store,
            shutdown.clone(),
        ));

        let (k, client, store) = start(ANPR);
        let anpr = Anpr::new(k, Default::default(), shared.clone()).unwrap();
        tasks.push(tira(
            anpr.install(Dispatcher::builder()),
            client,
            store,
            shutdown.clone(),
        ));

        let (k, client, store) = start(MCTC);
        let mctc = Motorizzazione::new(k).unwrap();
        mctc.carica(&DatiMotorizzazione {
            veicoli: vec![
                veicolo("AB123CD", &rossi()),
                veicolo("EF456GH", &verdi()),
                veicolo("GH789JK", &bianchi()),
            ],
        })
        .unwrap();
        tasks.push(tira(
            mctc.install(Dispatcher::builder()),
            client,
            store,
            shutdown.clone(),
        ));

        let (_, client, store) = start(NODO);
        let nodo = Nodo::open(
            client.clone(),
            store.clone(),
            shared.clone(),
            NodoImpostazioni {
                creditori: vec![Creditore {
                    entity: TORINO.parse().unwrap(),
                    codice_fiscale: CodiceFiscale::parse(TORINO_CF).unwrap(),
                    denominazione: "Comune di Torino".into(),
                    segregazione: 1,
                }],
                token_secondi: 30 * 60,
                token_sportello_secondi: 3 * 24 * 3600,
            },
        )
        .unwrap();
        tasks.push(tira(
            nodo.install(Dispatcher::builder()),
            client,
            store,
            shutdown.clone(),
        ));
        tasks.push(tokio::spawn(nodo.clone().run(shutdown.clone())));

        let (_, client, store) = start(PORTALE);
        let portale = Portale::open(client.clone(), store.clone(), NODO.parse().unwrap()).unwrap();
        tasks.push(tira(
            portale.install(Dispatcher::builder()),
            client,
            store,
            shutdown.clone(),
        ));

        // Both registries reach ANPR as full initial loads.
        assert_eq!(anagrafe.caricamento_iniziale(10).await.unwrap(), 1);
        assert_eq!(cuneo.caricamento_iniziale(10).await.unwrap(), 1);
        for c in [&anagrafe, &cuneo] {
            eventually(20, "an initial load to complete", || async {
                c.esito_caricamento(1).unwrap().filter(|e| e.completato)
            })
            .await;
        }
        assert!(anpr.posizione(&rossi()).unwrap().is_some());
        assert!(anpr.posizione(&bianchi()).unwrap().is_some());

        Federazione {
            dir,
            hub,
            clock,
            stop,
            tasks,
            ufficio,
            mctc,
            nodo,
            portale,
        }
    }

    fn torino() -> EntityId {
        TORINO.parse().unwrap()
    }

    async fn presenta(&self, d: Domanda) -> DomandaRicevuta {
        self.portale
            .domanda(&Federazione::torino(), d)
            .await
            .unwrap()
    }

    /// Waits until the portal shows application `pratica` in `stato`.
    async fn in_stato(&self, pratica: &str, stato: StatoPermesso) -> Vista {
        eventually(20, &format!("{pratica} to be {stato:?}"), || async {
            self.portale
                .vista(pratica)
                .unwrap()
                .filter(|v| v.stato == stato)
        })
        .await
    }

    /// Pays the fee of `pratica` by card now.
    async fn paga(&self, pratica: &str) {
        let now = self.clock.now();
        let il = Istante::parse(&format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        ))
        .unwrap();
        self.portale
            .paga(
                pratica,
                &CodiceFiscale::parse(TORINO_CF).unwrap(),
                Canale::Carta,
                il,
            )
            .await
            .unwrap();
    }

    /// The mail written to applicants, as text.
    fn posta(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("posta-ztl")) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .collect()
    }

    async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.hub.shutdown().await.unwrap();
    }
}

fn codici(v: &Vista) -> Vec<String> {
    v.rigetto
        .as_ref()
        .map(|r| r.motivi.iter().map(|m| m.codice.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_permit_issued_after_more_information_and_the_fee_then_renewed_as_the_same_permit() {
    let f = Federazione::new().await;
    // Rossi, resident in Via Roma (sector A), applies without his car's registration papers.
    let r = f
        .presenta(domanda(
            "P-1",
            "residente",
            &rossi(),
            &["AB123CD"],
            json!({"dal": "2026-03-02"}),
            &[],
        ))
        .await;
    assert_eq!(r.protocollo.numero, "ZTL/2026/000001");
    assert_eq!(r.tariffa, euro(30));
    assert_eq!(r.termine.as_str(), "2026-04-01");
    let nav = r.nav.clone().expect("a fee has its notice");
    assert!(
        nav.as_str().starts_with("301"),
        "segregation code 01: {nav}"
    );

    // The office asks for them, by message and by mail.
    let v = f.in_stato("P-1", StatoPermesso::Integrazione).await;
    let richiesta = v.integrazione.unwrap();
    assert_eq!(
        richiesta.richieste.as_slice(),
        ["carta di circolazione".to_owned()]
    );
    assert_eq!(richiesta.termine.as_str(), "2026-03-17");
    eventually(20, "the mail to the applicant", || async {
        f.posta()
            .into_iter()
            .find(|m| m.contains("ZTL/2026/000001") && m.contains("carta di circolazione"))
    })
    .await;

    // He answers through the portal: verifying again, but not issued before the fee is paid.
    f.portale
        .integra(
            &serde_json::from_value::<Integrazione>(json!({
                "pratica": "P-1",
                "nota": "allego la carta di circolazione",
                "allegati": [documento("Carta di  circolazione")],
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    f.in_stato("P-1", StatoPermesso::InVerifica).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p = f.ufficio.pratica("ZTL/2026/000001").unwrap().unwrap();
    assert_eq!(p.stato, StatoPermesso::InVerifica, "{p:?}");

    // He pays: the receipt reaches the office, which issues the permit to 31 December 2027.
    f.paga("P-1").await;
    let v = f.in_stato("P-1", StatoPermesso::Rilasciato).await;
    let rilascio = v.rilascio.unwrap();
    assert_eq!(
        (rilascio.dal.as_str(), rilascio.al.as_str()),
        ("2026-03-02", "2027-12-31")
    );
    let numero = rilascio.permesso.clone();
    let permesso = f.ufficio.permesso(&numero).unwrap().unwrap();
    assert_eq!(permesso.stato, StatoPermesso::Rilasciato);
    let stati: Vec<_> = f
        .ufficio
        .pratica("ZTL/2026/000001")
        .unwrap()
        .unwrap()
        .storia
        .iter()
        .map(|s| s.stato)
        .collect();
    assert_eq!(
        stati,
        [
            StatoPermesso::Presentata,
            StatoPermesso::InVerifica,
            StatoPermesso::Integrazione,
            StatoPermesso::InVerifica,
            StatoPermesso::Rilasciato
        ]
    );
    let pos = f.nodo.posizione(&nav).unwrap().unwrap();
    assert_eq!(pos.stato, StatoPosizione::Pagata);

    // Too early to renew in March 2027; in November the renewal continues the same permit.
    f.clock.set(datetime!(2027-03-01 09:00 UTC));
    let mut rinnovo = domanda(
        "P-2",
        "residente",
        &rossi(),
        &["AB123CD"],
        json!({"dal": "2027-03-01"}),
        &["carta di circolazione"],
    );
    rinnovo.tipo = TipoDomanda::Rinnovo;
    rinnovo.permesso_precedente = Some(numero.clone());
    let r = f.presenta(rinnovo.clone()).await;
    assert_eq!(r.nav, None, "nothing to pay for a rejected application");
    let v = f.in_stato("P-2", StatoPermesso::Rigettata).await;
    assert_eq!(codici(&v), ["rinnovo-anticipato"]);

    f.clock.set(datetime!(2027-11-15 09:00 UTC));
    rinnovo.pratica = "P-3".into();
    rinnovo.periodo.dal = snodo_schemas::formats::Data::parse("2027-11-15").unwrap();
    let r = f.presenta(rinnovo).await;
    assert_eq!(r.tariffa, euro(30));
    f.paga("P-3").await;
    let v = f.in_stato("P-3", StatoPermesso::Rilasciato).await;
    let rilascio = v.rilascio.unwrap();
    assert_eq!(rilascio.permesso, numero, "a renewal continues the permit");
    assert_eq!(
        (rilascio.dal.as_str(), rilascio.al.as_str()),
        ("2028-01-01", "2029-12-31")
    );
    let permesso = f.ufficio.permesso(&numero).unwrap().unwrap();
    assert_eq!(permesso.al.as_str(), "2029-12-31");
    assert_eq!(permesso.dal.as_str(), "2026-03-02");
    assert_eq!(permesso.pratiche.len(), 2);

    // The old expiry passes and the permit stays in force.
    f.clock.set(datetime!(2028-01-02 09:00 UTC));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        f.ufficio.permesso(&numero).unwrap().unwrap().stato,
        StatoPermesso::Rilasciato
    );
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_applicant_not_resident_in_the_comune_is_refused_and_the_notice_withdrawn() {
    let f = Federazione::new().await;
    // Bianchi lives in Cuneo and asks for a resident's permit in Turin with his own car.
    let r = f
        .presenta(domanda(
            "P-1",
            "residente",
            &bianchi(),
            &["GH789JK"],
            json!({"dal": "2026-03-02"}),
            &["carta di circolazione"],
        ))
        .await;
    let nav = r.nav.unwrap();
    let v = f.in_stato("P-1", StatoPermesso::Rigettata).await;
    assert_eq!(codici(&v), ["non-residente"]);
    assert!(
        v.rigetto.unwrap().motivi.as_slice()[0]
            .descrizione
            .contains("004078")
    );
    // Nothing is owed for a rejected application: the notice is cancelled at the provider.
    eventually(20, "the notice to be cancelled", || async {
        f.nodo
            .posizione(&nav)
            .unwrap()
            .filter(|p| p.stato == StatoPosizione::Invalida)
    })
    .await;
    // A business cannot hold a resident's permit: refused on receipt.
    f.presenta(domanda(
        "P-2",
        "residente",
        TORINO_CF,
        &["AB123CD"],
        json!({"dal": "2026-03-02"}),
        &[],
    ))
    .await;
    let v = f.in_stato("P-2", StatoPermesso::Rigettata).await;
    assert!(codici(&v).contains(&"richiedente-non-persona".to_owned()));
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vehicles_unknown_to_the_motor_registry_or_of_someone_else_are_refused() {
    let f = Federazione::new().await;
    // One plate nobody registered, one car of Verdi's: both reasons, once both answered.
    f.presenta(domanda(
        "P-1",
        "residente",
        &rossi(),
        &["ZZ999ZZ", "EF456GH"],
        json!({"dal": "2026-03-02"}),
        &["carta di circolazione"],
    ))
    .await;
    let v = f.in_stato("P-1", StatoPermesso::Rigettata).await;
    let mut c = codici(&v);
    c.sort();
    assert_eq!(c, ["veicolo-non-intestato", "veicolo-sconosciuto"]);
    // A temporary permit needs no ownership: Verdi's car is fine there.
    f.presenta(domanda(
        "P-2",
        "temporaneo",
        &rossi(),
        &["EF456GH"],
        json!({"dal": "2026-03-02", "al": "2026-03-20"}),
        &[],
    ))
    .await;
    f.paga("P-2").await;
    let v = f.in_stato("P-2", StatoPermesso::Rilasciato).await;
    assert_eq!(v.rilascio.unwrap().al.as_str(), "2026-03-20");
    // The motor registry learns a new car of Rossi's: now it passes.
    f.mctc
        .immatricola(
            &Targa::parse("ZZ999ZZ").unwrap(),
            &veicolo("ZZ999ZZ", &rossi()).veicolo,
        )
        .await
        .unwrap();
    f.presenta(domanda(
        "P-3",
        "residente",
        &rossi(),
        &["ZZ999ZZ"],
        json!({"dal": "2026-03-02"}),
        &["carta di circolazione"],
    ))
    .await;
    f.paga("P-3").await;
    f.in_stato("P-3", StatoPermesso::Rilasciato).await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_permit_expires_at_the_end_of_its_period_and_is_then_not_renewed() {
    let f = Federazione::new().await;
    // A garage permit for March to June.
    f.presenta(domanda(
        "P-1",
        "garage",
        &rossi(),
        &["AB123CD"],
        json!({"dal": "2026-03-02", "al": "2026-06-30"}),
        &["titolo del box"],
    ))
    .await;
    f.paga("P-1").await;
    let v = f.in_stato("P-1", StatoPermesso::Rilasciato).await;
    let numero = v.rilascio.unwrap().permesso;

    // In force on its last day; expired once it is over, and the portal is told.
    f.clock.set(datetime!(2026-06-30 18:00 UTC));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        f.ufficio.permesso(&numero).unwrap().unwrap().stato,
        StatoPermesso::Rilasciato
    );
    f.clock.set(datetime!(2026-07-01 00:00:01 UTC));
    let v = f.in_stato("P-1", StatoPermesso::Scaduto).await;
    let last = v.stati.last().unwrap();
    assert_eq!(last.permesso.as_deref(), Some(numero.as_str()));
    assert_eq!(
        f.ufficio.permesso(&numero).unwrap().unwrap().stato,
        StatoPermesso::Scaduto
    );

    // An expired permit is not renewed: a new one is asked for.
    let mut rinnovo = domanda(
        "P-2",
        "garage",
        &rossi(),
        &["AB123CD"],
        json!({"dal": "2026-07-01", "al": "2026-12-31"}),
        &["titolo del box"],
    );
    rinnovo.tipo = TipoDomanda::Rinnovo;
    rinnovo.permesso_precedente = Some(numero.clone());
    f.presenta(rinnovo).await;
    let v = f.in_stato("P-2", StatoPermesso::Rigettata).await;
    assert_eq!(codici(&v), ["permesso-non-rinnovabile"]);

    // A permit in force can be revoked; the portal is told why.
    f.presenta(domanda(
        "P-3",
        "garage",
        &rossi(),
        &["AB123CD"],
        json!({"dal": "2026-07-01", "al": "2026-12-31"}),
        &["titolo del box"],
    ))
    .await;
    f.paga("P-3").await;
    let v = f.in_stato("P-3", StatoPermesso::Rilasciato).await;
    let numero = v.rilascio.unwrap().permesso;
    f.ufficio
        .revoca(
            &numero,
            snodo_connectors::back_office::motivo("box-venduto", "the garage was sold"),
        )
        .await
        .unwrap();
    let v = f.in_stato("P-3", StatoPermesso::Revocato).await;
    assert_eq!(
        v.stati.last().unwrap().motivo.as_ref().unwrap().codice,
        "box-venduto"
    );
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_office_decides_when_the_thirty_days_are_over() {
    let f = Federazione::new().await;
    // Rossi applies without the papers, never answers and never pays.
    let r = f
        .presenta(domanda(
            "P-1",
            "residente",
            &rossi(),
            &["AB123CD"],
            json!({"dal": "2026-03-02"}),
            &[],
        ))
        .await;
    let nav = r.nav.unwrap();
    f.in_stato("P-1", StatoPermesso::Integrazione).await;

    // On the 29th day nothing is decided yet; on the last day the term decides.
    f.clock.set(datetime!(2026-03-31 12:00 UTC));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        f.portale.vista("P-1").unwrap().unwrap().stato,
        StatoPermesso::Integrazione
    );
    f.clock.set(datetime!(2026-04-01 00:00 UTC));
    let v = f.in_stato("P-1", StatoPermesso::Rigettata).await;
    let mut c = codici(&v);
    c.sort();
    assert_eq!(c, ["integrazione-mancante", "tariffa-non-pagata"]);
    let p = f.ufficio.pratica("ZTL/2026/000001").unwrap().unwrap();
    assert_eq!(p.stato, StatoPermesso::Rigettata);
    eventually(20, "the notice to be cancelled", || async {
        f.nodo
            .posizione(&nav)
            .unwrap()
            .filter(|p| p.stato == StatoPosizione::Invalida)
    })
    .await;
    f.shutdown().await;
}

#[test]
fn snodo_connector_runs_the_ztl_back_offices_from_their_configurations() {
    use snodo_connectors::config::{AdapterSection, Config as ConnectorConfig};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ztl");
    for (file, name) in [
        ("ztl-001272.toml", "ztl"),
        ("portale.toml", "portale-ztl"),
        ("motorizzazione.toml", "motorizzazione"),
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
            "ztl-001272.toml",
            "categoria = \"garage\"",
            "categoria = \"camper\"",
            "categorie[1].categoria",
        ),
        (
            "ztl-001272.toml",
            "codice_fiscale = \"00514490010\"",
            "codice_fiscale = \"00514490011\"",
            "codice_fiscale",
        ),
        (
            "motorizzazione.toml",
            "targa = \"AB123CD\"",
            "targa = \"AB-123\"",
            "veicoli[0].targa",
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
