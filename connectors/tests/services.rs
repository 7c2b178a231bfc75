//! The two services end to end over a real hub on 127.0.0.1 (TLS, signatures, the registry of
//! `connectors/examples/residenza/hub-services.toml`, bodies checked against the catalog),
//! with every body a reference back office in its own store and the terms of days driven by
//! a manual clock: a change of residence through every state path, the registry feed with a
//! lost and a duplicated batch, invalid inputs refused with their reason, the official's mail.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, url};
use serde_json::{Value, json};
use snodo_broker::cli::serve::{self, Running};
use snodo_broker::config::Config;
use snodo_connectors::back_office::anpr::Anpr;
use snodo_connectors::back_office::comune::{Comune, DatiComune, Via};
use snodo_connectors::back_office::motorizzazione::Motorizzazione;
use snodo_connectors::back_office::portale::Portale;
use snodo_connectors::dispatch::{DispatcherBuilder, PullConfig};
use snodo_connectors::mail::MailConfig;
use snodo_connectors::service::{Committer, Invio, ServiceError};
use snodo_connectors::{
    Clock, Dispatcher, HubClient, HubClientConfig, ManualClock, RetryPolicy, Store,
};
use snodo_envelopes::pki::{self, KeyType};
use snodo_envelopes::{EntityId, Format, Recipient};
use snodo_schemas::formats::{CodiceFiscalePersona, CodiceIstat};
use snodo_schemas::services::anagrafe_variazioni::{
    EsitoLotto, PosizioneAnagrafica, TipoVariazione, Variazione,
};
use snodo_schemas::services::residenza_cambio::{
    EsitoAccertamento, EsitoAnpr, EsitoDichiarazione, StatoPratica,
};
use time::macros::datetime;

const TORINO: &str = "comune:001272";
const CUNEO: &str = "comune:004078";
const ANPR: &str = "anpr:ministero";
const MCTC: &str = "mctc:motorizzazione";
const PORTALE: &str = "portale:comunefacile";

/// A valid codice fiscale from its first 15 characters.
fn cf(first15: &str) -> String {
    let c = CodiceFiscalePersona::check_letter(first15).unwrap();
    format!("{first15}{c}")
}

fn persona(cf: &str, cognome: &str, nome: &str) -> Value {
    json!({"codice_fiscale": cf, "cognome": cognome, "nome": nome, "sesso": "M",
           "data_nascita": "1980-01-01", "luogo_nascita": "D205"})
}

fn indirizzo(comune: &str, via: &str, civico: &str) -> Value {
    json!({"comune": comune, "via": via, "civico": civico})
}

fn residente(
    cf: &str,
    cognome: &str,
    famiglia: &str,
    comune: &str,
    via: &str,
    civico: &str,
) -> PosizioneAnagrafica {
    serde_json::from_value(json!({
        "persona": persona(cf, cognome, "Anna"),
        "indirizzo": indirizzo(comune, via, civico),
        "famiglia": famiglia,
        "iscritto_dal": "2015-01-01",
    }))
    .unwrap()
}

/// A declaration of `pratica` to Turin for `persone` (`cf`, surname, extra member fields).
fn dichiarazione(
    pratica: &str,
    provenienza: Value,
    via: &str,
    civico: &str,
    persone: &[(&str, &str, Value)],
) -> Value {
    let persone: Vec<Value> = persone
        .iter()
        .enumerate()
        .map(|(i, (cf, cognome, extra))| {
            let mut p = json!({
                "persona": persona(cf, cognome, "Luca"),
                "relazione": if i == 0 { "intestatario" } else { "figlio" },
            });
            if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
                p.extend(extra.clone());
            }
            p
        })
        .collect();
    json!({
        "pratica": pratica,
        "comune": "001272",
        "data_dichiarazione": "2027-03-01",
        "data_trasferimento": "2027-02-26",
        "provenienza": provenienza,
        "indirizzo": indirizzo("001272", via, civico),
        "persone": persone,
        "dichiarante": persone[0]["persona"]["codice_fiscale"],
        "occupazione": {"titolo": "locazione"},
        "documento_identita": {"tipo": "carta_identita", "numero": "CA00000AA",
                               "rilasciato_da": "Comune di Cuneo", "scadenza": "2030-01-01"},
        "firmata": true,
        "contatti": {"email": "cittadino@example.it"},
    })
}

fn da_cuneo() -> Value {
    json!({"altro_comune": {"comune": "004078"}})
}

/// The hub client, store and committer of `entity` (Cuneo signs XML, the others JSON); the
/// store is `state-<entity>` in `dir`, so that a restart finds it.
fn corpo(dir: &Path, hub: &Running, entity: &str) -> (Committer, HubClient, Store) {
    let stem = entity.parse::<EntityId>().unwrap().file_stem();
    let pki = dir.join("pki");
    let mut c = HubClientConfig::new(
        url(hub),
        pki.join("ca.crt"),
        pki.join(format!("{stem}.crt")),
        pki.join(format!("{stem}.key")),
    );
    c.format = if entity == CUNEO {
        Format::Xml
    } else {
        Format::Json
    };
    c.retry = RetryPolicy {
        attempts: 5,
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
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

/// A federation: the hub, and each body's back office pulling its inbox.
struct Federazione {
    dir: tempfile::TempDir,
    hub: Running,
    clock: ManualClock,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    torino: Option<Arc<Comune>>,
    cuneo: Arc<Comune>,
    anpr: Arc<Anpr>,
    mctc: Arc<Motorizzazione>,
    portale: Arc<Portale>,
}

impl Federazione {
    /// The federation; Turin's back office runs in-process when `torino` gives its data.
    async fn new(torino: Option<DatiComune>, cuneo: DatiComune) -> Federazione {
        let dir = tempfile::tempdir().unwrap();
        let ids = [TORINO, CUNEO, ANPR, MCTC, PORTALE];
        let entities: Vec<EntityId> = ids.iter().map(|e| e.parse().unwrap()).collect();
        pki::init(&dir.path().join("pki"), &entities, KeyType::P256).unwrap();
        let entities_toml: String = ids
            .iter()
            .map(|e| format!("[[entities]]\nid = \"{e}\"\n"))
            .collect();
        let config = format!(
            "[hub]\nname = \"hub\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\n\
             [tls]\nca = \"pki/ca.crt\"\ncert = \"pki/hub.crt\"\nkey = \"pki/hub.key\"\n\n\
             [journal]\ncheckpoint_interval = \"100ms\"\n\n{entities_toml}\n{}",
            include_str!("../examples/residenza/hub-services.toml")
        );
        let path = dir.path().join("snodo.toml");
        std::fs::write(&path, config).unwrap();
        let hub = serve::start(Config::load(&path).unwrap(), Some(path.clone()))
            .await
            .unwrap();
        let clock = ManualClock::new(datetime!(2027-03-01 09:00 UTC));
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        let start = |entity: &str| corpo(dir.path(), &hub, entity);
        let run = |builder: DispatcherBuilder,
                   client: HubClient,
                   store: Store,
                   tasks: &mut Vec<tokio::task::JoinHandle<()>>| {
            tasks.push(tira(builder, client, store, shutdown.clone()));
        };
        let shared: Arc<dyn Clock> = Arc::new(clock.clone());

        let torino_bo = torino.map(|dati| {
            let (k, client, store) = start(TORINO);
            let bo = Comune::new(k, dati, shared.clone()).unwrap();
            tasks.extend(bo.start(shutdown.clone()));
            run(bo.install(Dispatcher::builder()), client, store, &mut tasks);
            bo
        });

        let (k, client, store) = start(CUNEO);
        let cuneo_bo = Comune::new(k, cuneo, shared.clone()).unwrap();
        tasks.extend(cuneo_bo.start(shutdown.clone()));
        run(
            cuneo_bo.install(Dispatcher::builder()),
            client,
            store,
            &mut tasks,
        );

        let (k, client, store) = start(ANPR);
        let anpr = Anpr::new(k, Default::default(), shared.clone()).unwrap();
        run(
            anpr.install(Dispatcher::builder()),
            client,
            store,
            &mut tasks,
        );

        let (k, client, store) = start(MCTC);
        let mctc = Motorizzazione::new(k).unwrap();
        run(
            mctc.install(Dispatcher::builder()),
            client,
            store,
            &mut tasks,
        );

        let (k, client, store) = start(PORTALE);
        let portale = Portale::new(k, shared).unwrap();
        run(
            portale.install(Dispatcher::builder()),
            client,
            store,
            &mut tasks,
        );

        Federazione {
            dir,
            hub,
            clock,
            stop,
            tasks,
            torino: torino_bo,
            cuneo: cuneo_bo,
            anpr,
            mctc,
            portale,
        }
    }

    fn torino(&self) -> &Comune {
        self.torino.as_deref().expect("Turin runs in-process")
    }

    fn mail_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("posta-torino")
    }

    /// Waits until the portal's practice `p` has gone through exactly `stati`.
    async fn stati(&self, p: &str, stati: &[StatoPratica]) {
        eventually(20, &format!("{p} to go through {stati:?}"), || async {
            let got = self.portale.pratica(p).unwrap()?;
            let seen: Vec<_> = got.stati.iter().map(|s| s.stato).collect();
            assert!(
                stati.starts_with(&seen) || seen.starts_with(stati),
                "{p} went through {seen:?}, expected {stati:?}"
            );
            (seen == stati).then_some(())
        })
        .await;
    }

    async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.hub.shutdown().await.unwrap();
    }
}

fn stradario() -> Vec<Via> {
    vec![
        Via {
            nome: "Via Roma".into(),
            civici: Some(300),
        },
        Via {
            nome: "Via Giuseppe Garibaldi".into(),
            civici: Some(60),
        },
    ]
}

fn torino(dir: &Path, residenti: Vec<PosizioneAnagrafica>) -> DatiComune {
    DatiComune {
        stradario: stradario(),
        comuni: vec![
            CodiceIstat::parse("001272").unwrap(),
            CodiceIstat::parse("004078").unwrap(),
        ],
        ufficiale: Some("anagrafe@comune.torino.example.it".into()),
        posta: Some(MailConfig {
            from: "anagrafe@comune.torino.example.it".into(),
            smtp: None,
            directory: Some(dir.join("posta-torino")),
        }),
        residenti,
        anpr: ANPR.into(),
    }
}

fn cuneo(residenti: Vec<PosizioneAnagrafica>) -> DatiComune {
    DatiComune {
        stradario: vec![Via {
            nome: "Corso Nizza".into(),
            civici: None,
        }],
        comuni: Vec::new(),
        ufficiale: None,
        posta: None,
        residenti,
        anpr: ANPR.into(),
    }
}

/// The mail directory's messages, as text.
fn mails(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect()
}

#[tokio::test]
async fn a_change_of_residence_through_every_state_path_leaves_every_body_consistent() {
    // Four families live in Cuneo; three move to Turin, one declaration is incomplete.
    let a = [cf("RSSLCU80A01D205"), cf("RSSMRC10A01D205")];
    let b = cf("BNCLCU80A01D205");
    let c = cf("VRDLCU80A01D205");
    let d = cf("NRELCU80A01D205");
    let residenti_cuneo = vec![
        residente(&a[0], "Rossi", "CN-1", "004078", "Corso Nizza", "1"),
        residente(&a[1], "Rossi", "CN-1", "004078", "Corso Nizza", "1"),
        residente(&b, "Bianchi", "CN-2", "004078", "Corso Nizza", "2"),
        residente(&c, "Verdi", "CN-3", "004078", "Corso Nizza", "3"),
        residente(&d, "Neri", "CN-4", "004078", "Corso Nizza", "4"),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let f = Federazione::new(Some(torino(tmp.path(), Vec::new())), cuneo(residenti_cuneo)).await;
    let mail_dir = tmp.path().join("posta-torino");

    // Cuneo's registry reaches ANPR as a full initial load in two parts.
    assert_eq!(f.cuneo.caricamento_iniziale(3).await.unwrap(), 2);
    eventually(20, "the initial load to complete", || async {
        f.cuneo
            .esito_caricamento(2)
            .unwrap()
            .filter(|e| e.completato)
            .or(f
                .cuneo
                .esito_caricamento(1)
                .unwrap()
                .filter(|e| e.completato))
    })
    .await;
    assert_eq!(
        f.anpr.posizione(&c).unwrap().unwrap().comune.as_str(),
        "004078"
    );
    assert_eq!(f.anpr.feed("004078").unwrap().unwrap().prossimo, 1);

    // The portal submits four declarations.
    let patente =
        json!({"patente": {"numero": "TO1234567X", "categorie": ["B"]}, "veicoli": ["AB123CD"]});
    f.portale
        .dichiara(&dichiarazione(
            "P-A",
            da_cuneo(),
            "Via Roma",
            "10",
            &[(&a[0], "Rossi", json!({})), (&a[1], "Rossi", json!({}))],
        ))
        .await
        .unwrap();
    f.portale
        .dichiara(&dichiarazione(
            "P-B",
            da_cuneo(),
            "Via Roma",
            "12",
            &[(&b, "Bianchi", json!({}))],
        ))
        .await
        .unwrap();
    f.portale
        .dichiara(&dichiarazione(
            "P-C",
            da_cuneo(),
            "via  giuseppe garibaldi",
            "7/B",
            &[(&c, "Verdi", patente)],
        ))
        .await
        .unwrap();
    let mut incompleta = dichiarazione(
        "P-D",
        da_cuneo(),
        "Via dei Mille",
        "3",
        &[(&d, "Neri", json!({}))],
    );
    incompleta["firmata"] = json!(false);
    incompleta
        .as_object_mut()
        .unwrap()
        .remove("documento_identita");
    f.portale.dichiara(&incompleta).await.unwrap();

    // Refused as incomplete: every reason reaches the portal.
    f.stati("P-D", &[StatoPratica::Ricevuta, StatoPratica::Rifiutata])
        .await;
    let pd = eventually(10, "the refusal's esito", || async {
        f.portale
            .pratica("P-D")
            .unwrap()
            .filter(|p| p.esito.is_some())
    })
    .await;
    let Some(EsitoDichiarazione::Rifiutata { motivi }) = pd.esito else {
        panic!("P-D: {:?}", pd.esito)
    };
    let codici: Vec<&str> = motivi.iter().map(|m| m.codice.as_str()).collect();
    assert_eq!(
        codici,
        [
            "firma-mancante",
            "documento-mancante",
            "indirizzo-inesistente"
        ]
    );
    assert!(
        motivi.as_slice()[2].descrizione.contains("Via dei Mille"),
        "{motivi:?}"
    );
    assert!(
        pd.stati[1]
            .nota
            .as_deref()
            .unwrap()
            .contains("firma-mancante")
    );

    // Received, not yet registered; the official has one mail per new practice.
    for p in ["P-A", "P-B", "P-C"] {
        f.stati(p, &[StatoPratica::Ricevuta]).await;
    }
    let posta = eventually(10, "three mails to the official", || async {
        let m = mails(&mail_dir);
        (m.len() == 3).then_some(m)
    })
    .await;
    for p in ["P-A", "P-B", "P-C"] {
        let m = posta
            .iter()
            .find(|m| m.contains(&format!("residenza {p} ")))
            .unwrap_or_else(|| panic!("no mail for {p}: {posta:?}"));
        assert!(m.contains("To: anagrafe@comune.torino.example.it"), "{m}");
    }
    assert!(
        !posta.iter().any(|m| m.contains("P-D")),
        "a refused declaration is no practice to work"
    );
    assert_eq!(
        f.anpr.posizione(&b).unwrap().unwrap().comune.as_str(),
        "004078"
    );

    let registrata = [
        StatoPratica::Ricevuta,
        StatoPratica::Registrata,
        StatoPratica::InAccertamento,
    ];
    // The official registers A at once; B and C wait for their term.
    f.torino().registra_ora("P-A").await.unwrap();
    f.stati("P-A", &registrata).await;
    // Two working days after Monday 1 March is Wednesday 3 March: not yet on Tuesday; then
    // the comune registers them, effective from the declaration date; the police check
    // begins.
    f.clock.advance(time::Duration::days(1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        f.torino().pratica("P-B").unwrap().unwrap().stato,
        StatoPratica::Ricevuta,
        "registered before its term"
    );
    f.clock.advance(time::Duration::days(1));
    for p in ["P-A", "P-B", "P-C"] {
        f.stati(p, &registrata).await;
        let esito = eventually(10, "the registration's esito", || async {
            f.portale.pratica(p).unwrap().and_then(|x| x.esito)
        })
        .await;
        assert_eq!(
            serde_json::to_value(&esito).unwrap(),
            json!({"registrata": {"decorrenza": "2027-03-01", "termine_accertamento": "2027-04-15"}})
        );
    }
    // ANPR applied them, told Cuneo (people and TARI) and the motor registry.
    eventually(
        20,
        "ANPR, Cuneo and the motor registry to follow",
        || async {
            let anpr = f.anpr.posizione(&c).unwrap()?;
            let cuneo = f.cuneo.residente(&c).unwrap()?;
            let mctc = f.mctc.intestatario(&c).unwrap()?;
            (anpr.comune.as_str() == "001272"
                && cuneo.emigrato.is_some()
                && mctc.indirizzo.comune.as_str() == "001272")
                .then_some(())
        },
    )
    .await;
    let esito = eventually(10, "ANPR's answer at Turin", || async {
        f.torino().risposte("P-C").unwrap().anpr
    })
    .await;
    assert!(matches!(esito, EsitoAnpr::Applicata { .. }), "{esito:?}");

    // Confirmed by check: the police find family A at home.
    f.torino()
        .accertamento("P-A", EsitoAccertamento::Positivo, None)
        .await
        .unwrap();
    f.stati(
        "P-A",
        &[&registrata[..], &[StatoPratica::Confermata]].concat(),
    )
    .await;
    // A second check of a confirmed practice is refused, naming its state.
    let e = f
        .torino()
        .accertamento("P-A", EsitoAccertamento::Negativo, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("Confermata"), "{e}");

    // Annulled after observations: a negative check, the notice with 10 days, the citizen's
    // observations, the official's rejection of them, the annulment.
    f.torino()
        .accertamento(
            "P-C",
            EsitoAccertamento::Negativo,
            Some("Nessuno al civico 7/B".into()),
        )
        .await
        .unwrap();
    let nota_c = [&registrata[..], &[StatoPratica::PreavvisoRigetto]].concat();
    f.stati("P-C", &nota_c).await;
    let preavviso = eventually(10, "the rejection notice", || async {
        f.portale.pratica("P-C").unwrap().and_then(|p| p.preavviso)
    })
    .await;
    assert_eq!(preavviso.termine_osservazioni.as_str(), "2027-03-13");
    assert!(
        preavviso.motivi.as_slice()[0]
            .descrizione
            .contains("Nessuno al civico 7/B")
    );
    f.portale
        .osservazioni("P-C", "Abito qui da febbraio.")
        .await
        .unwrap();
    eventually(10, "the observations to reach the comune", || async {
        f.torino().risposte("P-C").unwrap().osservazioni
    })
    .await;
    // The term passes with observations waiting: the official decides, not the clock.
    f.clock.advance(time::Duration::days(11));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        f.torino().pratica("P-C").unwrap().unwrap().stato,
        StatoPratica::PreavvisoRigetto
    );
    f.torino().esamina_osservazioni("P-C", false).await.unwrap();
    f.stati("P-C", &[&nota_c[..], &[StatoPratica::Annullata]].concat())
        .await;

    // Confirmed by silence: 45 days pass without a check of family B.
    f.clock.set(datetime!(2027-04-15 23:00 UTC));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        f.torino().pratica("P-B").unwrap().unwrap().stato,
        StatoPratica::InAccertamento,
        "confirmed before the 45th day ended"
    );
    f.clock.set(datetime!(2027-04-16 00:00 UTC));
    f.stati(
        "P-B",
        &[&registrata[..], &[StatoPratica::Confermata]].concat(),
    )
    .await;

    // Every body is consistent. ANPR: A and B in Turin, C back in Cuneo, D never moved.
    eventually(20, "ANPR to restore C and Cuneo to take C back", || async {
        let anpr = f.anpr.posizione(&c).unwrap()?;
        let cuneo = f.cuneo.residente(&c).unwrap()?;
        let mctc = f.mctc.intestatario(&c).unwrap()?;
        let torino = f.torino().risposte("P-C").unwrap();
        (anpr.comune.as_str() == "004078"
            && cuneo.emigrato.is_none()
            && mctc.indirizzo.comune.as_str() == "004078"
            && matches!(torino.anpr_annullamento, Some(EsitoAnpr::Applicata { .. })))
        .then_some(())
    })
    .await;
    for (x, comune, via) in [
        (&a[0], "001272", "Via Roma"),
        (&a[1], "001272", "Via Roma"),
        (&b, "001272", "Via Roma"),
        (&c, "004078", "Corso Nizza"),
        (&d, "004078", "Corso Nizza"),
    ] {
        let p = f.anpr.posizione(x).unwrap().unwrap();
        assert_eq!(
            (p.comune.as_str(), p.indirizzo.unwrap().via.as_str()),
            (comune, via),
            "ANPR, {x}"
        );
    }
    assert!(
        f.anpr
            .iscrizione("001272", "P-C")
            .unwrap()
            .unwrap()
            .annullata
    );
    assert!(f.anpr.iscrizione("001272", "P-D").unwrap().is_none());
    // Turin: A and B residents with an open TARI position each household; C is not, and its
    // position never applied; D left no trace but its refused practice.
    for x in [&a[0], &a[1], &b] {
        let r = f.torino().residente(x).unwrap().unwrap();
        assert_eq!((r.dal.as_str(), r.emigrato.is_none()), ("2027-03-01", true));
    }
    assert!(f.torino().residente(&c).unwrap().is_none());
    assert!(f.torino().residente(&d).unwrap().is_none());
    let tari = |bo: &Comune, x: &str| bo.posizioni_tari(x).unwrap();
    let ta = tari(f.torino(), &a[0]);
    assert_eq!(ta.len(), 1);
    assert_eq!((ta[0].1.componenti, ta[0].1.al.is_none()), (2, true));
    assert_eq!(tari(f.torino(), &b)[0].1.al, None);
    let tc = tari(f.torino(), &c);
    assert!(
        tc[0].1.annullata && tc[0].1.al.unwrap() < tc[0].1.dal,
        "{tc:?}"
    );
    assert!(tari(f.torino(), &d).is_empty());
    let pc = f.torino().pratica("P-C").unwrap().unwrap();
    assert_eq!(pc.motivi[0].codice, "dimora-non-abituale");
    assert_eq!(
        f.torino().pratica("P-D").unwrap().unwrap().stato,
        StatoPratica::Rifiutata
    );
    // Cuneo: A and B emigrated to Turin from 1 March, their TARI positions closed the day
    // before; C's reopened; D untouched.
    for x in [&a[0], &a[1], &b] {
        let e = f.cuneo.residente(x).unwrap().unwrap().emigrato.unwrap();
        assert_eq!(
            (e.comune.as_str(), e.dal.as_str()),
            ("001272", "2027-03-01")
        );
    }
    assert_eq!(
        tari(&f.cuneo, &a[0])[0].1.al.unwrap().as_str(),
        "2027-02-28"
    );
    assert_eq!(tari(&f.cuneo, &b)[0].1.al.unwrap().as_str(), "2027-02-28");
    assert_eq!(tari(&f.cuneo, &c)[0].1.al, None);
    assert_eq!(tari(&f.cuneo, &d)[0].1.al, None);
    assert!(f.cuneo.residente(&d).unwrap().unwrap().emigrato.is_none());
    // The motor registry: C's licence and car back at the Cuneo address.
    let v = f.mctc.veicolo("AB123CD").unwrap().unwrap();
    assert_eq!(
        (v.proprietario.as_str(), v.indirizzo.via.as_str()),
        (c.as_str(), "Corso Nizza")
    );
    assert!(
        f.mctc.intestatario(&a[0]).unwrap().is_none(),
        "A has no licence or vehicle"
    );
    // The portal: every state, in order; still exactly one mail per practice.
    f.stati(
        "P-A",
        &[&registrata[..], &[StatoPratica::Confermata]].concat(),
    )
    .await;
    assert_eq!(
        mails(&mail_dir)
            .iter()
            .filter(|m| m.contains("Nuova pratica"))
            .count(),
        3
    );
    f.shutdown().await;
}

#[tokio::test]
async fn the_registry_feed_recovers_a_lost_batch_and_ignores_a_duplicate() {
    let x = cf("GLLPLA70A01L219");
    let tmp = tempfile::tempdir().unwrap();
    let dati = torino(
        tmp.path(),
        vec![residente(&x, "Gialli", "TO-9", "001272", "Via Roma", "1")],
    );
    let f = Federazione::new(Some(dati), cuneo(Vec::new())).await;
    // The full load first: the batches follow it from number 1.
    assert_eq!(f.torino().caricamento_iniziale(100).await.unwrap(), 1);
    eventually(10, "the load", || async {
        f.torino()
            .esito_caricamento(1)
            .unwrap()
            .filter(|e| e.completato)
    })
    .await;

    // Three batches, each moving X along Via Roma: only their order gives number 30.
    let sposta = |civico: &str| -> Variazione {
        serde_json::from_value(json!({
            "tipo": "cambio_indirizzo", "data": "2027-03-01",
            "persona": persona(&x, "Gialli", "Anna"),
            "indirizzo": indirizzo("001272", "Via Roma", civico),
        }))
        .unwrap()
    };
    for civico in ["10", "20", "30"] {
        f.torino()
            .prepara_lotto(vec![sposta(civico)])
            .await
            .unwrap();
    }
    // Batch 2 is lost: 1 and 3 are sent.
    f.torino().invia_lotto(1).await.unwrap();
    f.torino().invia_lotto(3).await.unwrap();
    // ANPR holds 3, asks for 2, Turin resends it, ANPR applies 2 then 3.
    let st = eventually(20, "batches 1–3 applied", || async {
        f.anpr.feed("001272").unwrap().filter(|s| s.prossimo == 4)
    })
    .await;
    assert_eq!((st.applicati, st.richiesto_fino), (3, 2));
    let p = f.anpr.posizione(&x).unwrap().unwrap();
    assert_eq!(p.indirizzo.unwrap().civico, "30");
    assert_eq!(
        f.torino().lotto(2).unwrap().unwrap().invii,
        1,
        "batch 2 went out once, on request"
    );
    for seq in 1..=3 {
        let e = eventually(10, "the answers", || async {
            f.torino()
                .esito_lotto(seq)
                .unwrap()
                .filter(|e| e.esito == EsitoLotto::Applicato {})
        })
        .await;
        assert_eq!(e.sequenza, seq);
    }

    // Batch 1 arrives again: ignored, said so, nothing changes.
    f.torino().invia_lotto(1).await.unwrap();
    eventually(10, "the duplicate's answer", || async {
        f.torino()
            .esito_lotto(1)
            .unwrap()
            .filter(|e| e.esito == EsitoLotto::GiaApplicato {})
    })
    .await;
    let st = f.anpr.feed("001272").unwrap().unwrap();
    assert_eq!((st.prossimo, st.applicati), (4, 3));
    assert_eq!(
        f.anpr
            .posizione(&x)
            .unwrap()
            .unwrap()
            .indirizzo
            .unwrap()
            .civico,
        "30"
    );

    // A death in batch 4 ends the position.
    let mut morte = sposta("30");
    morte.tipo = TipoVariazione::Morte;
    assert_eq!(f.torino().nuovo_lotto(vec![morte]).await.unwrap(), 4);
    let p = eventually(10, "batch 4", || async {
        f.anpr
            .posizione(&x)
            .unwrap()
            .filter(|p| p.cessata.is_some())
    })
    .await;
    assert!(p.cessata.unwrap().starts_with("morte"));
    // Cuneo signs XML: its batch travels in the message's XML form, checked by the hub
    // against the service's XSD and read by ANPR into the same types.
    let y = cf("VLTNNA20A41D205");
    let nascita: Variazione = serde_json::from_value(json!({
        "tipo": "nascita", "data": "2027-03-02",
        "persona": persona(&y, "Viola", "Anna"),
        "indirizzo": indirizzo("004078", "Corso Nizza", "8"),
        "famiglia": "CN-8",
    }))
    .unwrap();
    assert_eq!(f.cuneo.nuovo_lotto(vec![nascita]).await.unwrap(), 1);
    let p = eventually(10, "Cuneo's XML batch", || async {
        f.anpr.posizione(&y).unwrap()
    })
    .await;
    assert_eq!(
        (p.comune.as_str(), p.famiglia.as_deref()),
        ("004078", Some("CN-8"))
    );
    assert_eq!(f.anpr.feed("004078").unwrap().unwrap().prossimo, 2);
    let pki = f.dir.path().join("pki");
    let mut xml = HubClientConfig::new(
        url(&f.hub),
        pki.join("ca.crt"),
        pki.join("comune-004078.crt"),
        pki.join("comune-004078.key"),
    );
    xml.format = Format::Xml;
    let lotto = f.cuneo.lotto(1).unwrap().unwrap().lotto;
    let env = Invio::new(&ANPR.parse().unwrap(), "c", &lotto)
        .unwrap()
        .envelope(&HubClient::new(&xml).unwrap())
        .unwrap();
    let snodo_envelopes::Body::Xml(body) = env.body else {
        panic!("{:?}", env.body)
    };
    assert!(
        body.starts_with("<lotto xmlns=\"urn:snodo:service:anagrafe.variazioni:1\">"),
        "{body}"
    );
    // Resending a batch never numbered is refused by name.
    let e = f.torino().invia_lotto(9).await.unwrap_err();
    assert!(
        matches!(e, ServiceError::Refused(_)) && e.to_string().contains("batch 9"),
        "{e}"
    );
    f.shutdown().await;
}

#[tokio::test]
async fn invalid_inputs_get_a_clear_refusal_naming_what_was_wrong() {
    let e_cf = cf("FRRLCU75A01L219");
    let tmp = tempfile::tempdir().unwrap();
    let dati = torino(
        tmp.path(),
        vec![residente(
            &e_cf,
            "Ferri",
            "TO-1",
            "001272",
            "Via Giuseppe Garibaldi",
            "5",
        )],
    );
    let f = Federazione::new(Some(dati), cuneo(Vec::new())).await;
    let nuovo = cf("BLULCU90A01D205");

    // A wrong check letter: the portal refuses it naming the field, and records why.
    let mut sbagliato = cf("BLUMRC15A01D205");
    let last = sbagliato.pop().unwrap();
    sbagliato.push(if last == 'A' { 'B' } else { 'A' });
    let body = dichiarazione(
        "P-CF",
        da_cuneo(),
        "Via Roma",
        "1",
        &[(&nuovo, "Blu", json!({})), (&sbagliato, "Blu", json!({}))],
    );
    let e = f.portale.dichiara(&body).await.unwrap_err();
    assert!(matches!(e, ServiceError::Refused(_)), "{e:?}");
    let naming = format!(
        "/persone/1/persona/codice_fiscale: `{sbagliato}` is not a valid codice fiscale: the check letter should be"
    );
    assert!(e.to_string().contains(&naming), "{e}");
    let rec = f.portale.pratica("P-CF").unwrap().unwrap();
    assert!(rec.rifiuto.unwrap().contains(&sbagliato));
    // The hub refuses the same body sent past the portal, at the same field; nothing queued.
    let stem = PORTALE.parse::<EntityId>().unwrap().file_stem();
    let pki = f.dir.path().join("pki");
    let raw = HubClient::new(&HubClientConfig::new(
        url(&f.hub),
        pki.join("ca.crt"),
        pki.join(format!("{stem}.crt")),
        pki.join(format!("{stem}.key")),
    ))
    .unwrap();
    let env = raw
        .envelope(
            Recipient::Entity(TORINO.parse().unwrap()),
            "residenza.cambio",
            "dichiarazione",
        )
        .profile(snodo_envelopes::Profile::Request)
        .json(body)
        .build()
        .unwrap();
    let e = raw.submit(&env).await.unwrap_err();
    assert_eq!(e.code(), Some("body-schema-invalid"), "{e}");
    assert!(e.to_string().contains(&naming), "{e}");

    // A comune the federation does not have: the hub's refusal reaches the portal.
    let mut ignoto = dichiarazione(
        "P-IGNOTO",
        da_cuneo(),
        "Via Roma",
        "1",
        &[(&nuovo, "Blu", json!({}))],
    );
    ignoto["comune"] = json!("099999");
    let e = f.portale.dichiara(&ignoto).await.unwrap_err();
    assert!(
        matches!(&e, ServiceError::Hub { code, .. } if code == "unknown-recipient"),
        "{e:?}"
    );
    assert!(
        f.portale
            .pratica("P-IGNOTO")
            .unwrap()
            .unwrap()
            .rifiuto
            .unwrap()
            .contains("unknown-recipient")
    );
    // Coming from a comune that does not exist: the comune refuses it by name.
    f.portale
        .dichiara(&dichiarazione(
            "P-DA-IGNOTO",
            json!({"altro_comune": {"comune": "099998"}}),
            "Via Roma",
            "1",
            &[(&nuovo, "Blu", json!({}))],
        ))
        .await
        .unwrap();
    // A move to the address where they already live.
    f.portale
        .dichiara(&dichiarazione(
            "P-STESSO",
            json!({"stesso_comune": {}}),
            "Via Giuseppe Garibaldi",
            "5",
            &[(&e_cf, "Ferri", json!({}))],
        ))
        .await
        .unwrap();
    // A house number past the end of the street.
    f.portale
        .dichiara(&dichiarazione(
            "P-CIVICO",
            da_cuneo(),
            "Via Roma",
            "301",
            &[(&nuovo, "Blu", json!({}))],
        ))
        .await
        .unwrap();
    for (p, codice, parola) in [
        ("P-DA-IGNOTO", "comune-sconosciuto", "099998"),
        ("P-STESSO", "stesso-indirizzo", "Via Giuseppe Garibaldi 5"),
        ("P-CIVICO", "civico-inesistente", "301"),
    ] {
        f.stati(p, &[StatoPratica::Ricevuta, StatoPratica::Rifiutata])
            .await;
        let esito = eventually(10, "the esito", || async {
            f.portale.pratica(p).unwrap().and_then(|x| x.esito)
        })
        .await;
        let EsitoDichiarazione::Rifiutata { motivi } = esito else {
            panic!("{p}: {esito:?}")
        };
        assert_eq!(motivi.len(), 1, "{p}: {motivi:?}");
        assert_eq!(motivi.as_slice()[0].codice, codice, "{p}");
        assert!(
            motivi.as_slice()[0].descrizione.contains(parola),
            "{p}: {motivi:?}"
        );
    }
    // The official cannot register a refused practice, nor one that does not exist.
    let e = f.torino().registra_ora("P-STESSO").await.unwrap_err();
    assert!(e.to_string().contains("Rifiutata"), "{e}");
    let e = f.torino().registra_ora("P-NESSUNA").await.unwrap_err();
    assert!(e.to_string().contains("no practice P-NESSUNA"), "{e}");
    // The same practice id twice: refused by the portal before anything is sent.
    let e = f
        .portale
        .dichiara(&dichiarazione(
            "P-CIVICO",
            da_cuneo(),
            "Via Roma",
            "2",
            &[(&nuovo, "Blu", json!({}))],
        ))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already submitted"), "{e}");
    // Nothing was registered anywhere; no official was mailed about refused declarations.
    assert!(f.anpr.posizione(&nuovo).unwrap().is_none());
    assert_eq!(
        f.torino()
            .residente(&e_cf)
            .unwrap()
            .unwrap()
            .indirizzo
            .civico,
        "5"
    );
    assert!(mails(&f.mail_dir()).is_empty());
    f.shutdown().await;
}

#[test]
fn snodo_connector_runs_the_reference_back_offices_from_its_configuration() {
    use snodo_connectors::config::Config as ConnectorConfig;
    let sample =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/residenza/comune-001272.toml");
    let config = ConnectorConfig::load(&sample).unwrap();
    let snodo_connectors::config::AdapterSection::Reference { back_office, data } = &config.adapter
    else {
        panic!("{:?}", config.adapter)
    };
    assert_eq!(back_office, "comune");
    assert!(
        data["posta"]["directory"]
            .as_str()
            .unwrap()
            .starts_with(sample.parent().unwrap().to_str().unwrap())
    );
    // A street without a name is refused naming the field.
    let dir = tempfile::tempdir().unwrap();
    let bad = std::fs::read_to_string(&sample)
        .unwrap()
        .replace("{ nome = \"Via Roma\", civici = 300 }", "{ civici = 300 }");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, bad).unwrap();
    let e = ConnectorConfig::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("adapter.data") && e.contains("stradario[0]") && e.contains("nome"),
        "{e}"
    );
    for name in ["comune", "anpr", "motorizzazione", "portale"] {
        assert!(
            snodo_connectors::adapter::reference::find(name).is_ok(),
            "{name}"
        );
    }
    let e = snodo_connectors::adapter::reference::find("questura").unwrap_err();
    assert!(e.contains("comune, anpr, motorizzazione, portale"), "{e}");
}

/// `snodo-connector` as a child process, killed when dropped; its log is shown if the test
/// fails.
struct Processo(std::process::Child, std::path::PathBuf);

impl Drop for Processo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            eprintln!(
                "snodo-connector's log:\n{}",
                std::fs::read_to_string(&self.1).unwrap_or_default()
            );
        }
    }
}

#[tokio::test]
async fn snodo_connector_runs_the_reference_comune_against_the_hub() {
    let f = Federazione::new(None, cuneo(Vec::new())).await;
    let dir = f.dir.path();
    let pki = dir.join("pki");
    let config = format!(
        r#"
[hub]
url = "{url}"

[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"

[state]
dir = "state-bin"

[receive]
mode = "pull"
idle = "50ms"

[adapter]
kind = "reference"
back_office = "comune"

[adapter.data]
ufficiale = "anagrafe@comune.torino.example.it"
stradario = [{{ nome = "Via Roma", civici = 300 }}]

[adapter.data.posta]
from = "anagrafe@comune.torino.example.it"
directory = "posta-bin"
"#,
        url = url(&f.hub),
        ca = pki.join("ca.crt").display(),
        cert = pki.join("comune-001272.crt").display(),
        key = pki.join("comune-001272.key").display(),
    );
    let path = dir.join("torino.toml");
    std::fs::write(&path, config).unwrap();
    let log = std::fs::File::create(dir.join("torino.log")).unwrap();
    let _torino = Processo(
        std::process::Command::new(env!("CARGO_BIN_EXE_snodo-connector"))
            .arg("--config")
            .arg(&path)
            .stderr(log)
            .spawn()
            .unwrap(),
        dir.join("torino.log"),
    );
    let x = cf("GRGLCU80A01D205");
    // The child runs on the system clock: the declarations are dated today.
    let oggi = time::OffsetDateTime::now_utc().date().to_string();
    let datata = |mut d: Value| {
        d["data_dichiarazione"] = json!(oggi);
        d["data_trasferimento"] = json!(oggi);
        d
    };
    f.portale
        .dichiara(&datata(dichiarazione(
            "P-BIN",
            da_cuneo(),
            "Via Roma",
            "5",
            &[(&x, "Grigi", json!({}))],
        )))
        .await
        .unwrap();
    f.portale
        .dichiara(&datata(dichiarazione(
            "P-BIN-NO",
            da_cuneo(),
            "Via Po",
            "5",
            &[(&x, "Grigi", json!({}))],
        )))
        .await
        .unwrap();
    f.stati("P-BIN", &[StatoPratica::Ricevuta]).await;
    f.stati(
        "P-BIN-NO",
        &[StatoPratica::Ricevuta, StatoPratica::Rifiutata],
    )
    .await;
    // The relative mail directory is the configuration file's.
    let m = eventually(20, "the official's mail from the child process", || async {
        mails(&dir.join("posta-bin")).into_iter().next()
    })
    .await;
    assert!(m.contains("P-BIN "), "{m}");
    let log = std::fs::read_to_string(dir.join("torino.log")).unwrap();
    assert!(log.contains("snodo connector running."), "{log}");
    f.shutdown().await;
}

#[tokio::test]
async fn a_comune_restarted_keeps_its_practices_and_terms() {
    let tmp = tempfile::tempdir().unwrap();
    let f = Federazione::new(None, cuneo(Vec::new())).await;
    let shared: Arc<dyn Clock> = Arc::new(f.clock.clone());
    let avvia = || {
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let (k, client, store) = corpo(f.dir.path(), &f.hub, TORINO);
        let bo = Comune::new(k, torino(tmp.path(), Vec::new()), shared.clone()).unwrap();
        let mut tasks = bo.start(shutdown.clone());
        tasks.push(tira(
            bo.install(Dispatcher::builder()),
            client,
            store,
            shutdown,
        ));
        (bo, stop, tasks)
    };
    let (bo, stop, tasks) = avvia();
    let x = cf("RSTLCU80A01D205");
    f.portale
        .dichiara(&dichiarazione(
            "P-R",
            da_cuneo(),
            "Via Roma",
            "9",
            &[(&x, "Rosti", json!({}))],
        ))
        .await
        .unwrap();
    f.stati("P-R", &[StatoPratica::Ricevuta]).await;
    // Stopped, and everything it held let go; started again on the same store.
    let _ = stop.send(true);
    for t in tasks {
        t.await.unwrap();
    }
    drop(bo);
    let (bo, stop, tasks) = avvia();
    assert_eq!(
        bo.pratica("P-R").unwrap().unwrap().stato,
        StatoPratica::Ricevuta
    );
    // The registration term was kept: it falls due after the restart.
    f.clock.advance(time::Duration::days(2));
    f.stati(
        "P-R",
        &[
            StatoPratica::Ricevuta,
            StatoPratica::Registrata,
            StatoPratica::InAccertamento,
        ],
    )
    .await;
    assert_eq!(bo.residente(&x).unwrap().unwrap().indirizzo.civico, "9");
    // One mail for the practice, across the restart.
    assert_eq!(mails(&tmp.path().join("posta-torino")).len(), 1);
    let _ = stop.send(true);
    for t in tasks {
        t.await.unwrap();
    }
    f.shutdown().await;
}
