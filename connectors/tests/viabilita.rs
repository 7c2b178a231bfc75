//! Roads and mobility news end to end over a real hub on 127.0.0.1 (real TLS, signed event
//! envelopes fanned out by the hub's topic subscriptions, bodies checked against the catalog):
//! Turin's traffic office publishes, revises and ends events; the portal, Collegno and the
//! province keep their boards, each with its own store and pull loop, one of them down for a
//! while; the registry is `examples/viabilita/hub-services.toml`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::eventually;
use snodo_broker::cli::serve::{self, Running};
use snodo_broker::config::Config;
use snodo_connectors::client::{HubClientConfig, RetryPolicy};
use snodo_connectors::clock::SharedClock;
use snodo_connectors::dispatch::{Disposition, PullConfig};
use snodo_connectors::service::ServiceError;
use snodo_connectors::viabilita::abbonato::Abbonato;
use snodo_connectors::viabilita::bacheca::{Area, Filtro};
use snodo_connectors::viabilita::ufficio::{Bozza, Ufficio, annuncio};
use snodo_connectors::{Dispatcher, HubClient, ManualClock, Store};
use snodo_envelopes::pki::{self, KeyType};
use snodo_envelopes::{EntityId, Format, Profile, Recipient};
use snodo_schemas::formats::{CodiceIstat, Elenco, Istante};
use snodo_schemas::services::dati::Intervallo;
use snodo_schemas::services::mobilita_viabilita::{Evento, Gravita, Luogo, MotivoFine, TipoEvento};
use time::macros::datetime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const TURIN: &str = "comune:001272";
const COLLEGNO: &str = "comune:001090";
const PROVINCE: &str = "provincia:TO";
const PORTAL: &str = "portale:comunefacile";
const PREFECTURE: &str = "prefettura:TO";
const ENTITIES: [&str; 5] = [TURIN, COLLEGNO, PROVINCE, PORTAL, PREFECTURE];

const REGISTRY: &str = include_str!("../examples/viabilita/hub-services.toml");

const PULL: PullConfig = PullConfig {
    batch: 16,
    lease: Duration::from_secs(30),
    idle: Duration::from_millis(50),
};

/// One entity's connector: its store, its board and its dispatcher, and the pull loop when it
/// runs.
struct Nodo {
    abbonato: Arc<Abbonato>,
    dispatcher: Arc<Dispatcher>,
    running: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

impl Nodo {
    /// Starts the pull loop.
    fn up(&mut self) {
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(self.dispatcher.clone().run_pull(PULL, shutdown));
        self.running = Some((stop, task));
    }

    /// Stops the pull loop: the entity's connector is not running.
    async fn down(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(true);
            task.await.unwrap();
        }
    }

    /// The ids and revisions of the active events on the board.
    fn board(&self) -> Vec<(String, u32)> {
        self.abbonato
            .attivi(&Filtro::tutti())
            .unwrap()
            .into_iter()
            .map(|v| (v.evento.id, v.evento.versione))
            .collect()
    }

    /// Waits until the board is `expected`.
    async fn shows(&self, who: &str, expected: &[(&str, u32)]) {
        let expected: Vec<(String, u32)> = expected
            .iter()
            .map(|(id, v)| ((*id).to_owned(), *v))
            .collect();
        eventually(20, &format!("{who}'s board to be {expected:?}"), || {
            let ok = self.board() == expected;
            async move { ok.then_some(()) }
        })
        .await;
    }
}

/// The hub, Turin's office and the boards of Turin, Collegno, the province and the portal
/// (none running yet).
struct Federation {
    dir: tempfile::TempDir,
    hub: Running,
    clock: Arc<ManualClock>,
    ufficio: Ufficio,
    turin: Nodo,
    collegno: Nodo,
    province: Nodo,
    portal: Nodo,
}

impl Federation {
    async fn start() -> Federation {
        let dir = tempfile::tempdir().unwrap();
        let entities: Vec<EntityId> = ENTITIES.iter().map(|e| e.parse().unwrap()).collect();
        pki::init(&dir.path().join("pki"), &entities, KeyType::P256).unwrap();
        let entities_toml: String = ENTITIES
            .iter()
            .map(|e| format!("[[entities]]\nid = \"{e}\"\n"))
            .collect();
        let config = format!(
            r#"
[hub]
name = "hub"
listen = "127.0.0.1:0"
data_dir = "data"

[tls]
ca = "pki/ca.crt"
cert = "pki/hub.crt"
key = "pki/hub.key"

[journal]
checkpoint_interval = "100ms"

{entities_toml}
{REGISTRY}"#
        );
        let config_path = dir.path().join("snodo.toml");
        std::fs::write(&config_path, config).unwrap();
        let hub = serve::start(Config::load(&config_path).unwrap(), Some(config_path))
            .await
            .unwrap();
        let clock = Arc::new(ManualClock::new(datetime!(2026-03-02 09:00 UTC)));
        let shared: SharedClock = clock.clone();
        let stores = dir.path().to_owned();
        let nodo = |entity: &str| {
            let store = Store::open(&stores.join(entity.replace(':', "-"))).unwrap();
            let abbonato = Abbonato::open(&store).unwrap();
            let dispatcher = abbonato
                .install(Dispatcher::builder())
                .build(client(&dir, &hub, entity), store)
                .unwrap();
            Nodo {
                abbonato,
                dispatcher: Arc::new(dispatcher),
                running: None,
            }
        };
        let turin = nodo(TURIN);
        let ufficio = Ufficio::open(
            turin.dispatcher.client().clone(),
            turin.dispatcher.store().clone(),
            shared,
        )
        .unwrap();
        Federation {
            turin,
            collegno: nodo(COLLEGNO),
            province: nodo(PROVINCE),
            portal: nodo(PORTAL),
            ufficio,
            clock,
            hub,
            dir,
        }
    }

    fn client(&self, entity: &str) -> HubClient {
        client(&self.dir, &self.hub, entity)
    }

    async fn stop(mut self) {
        for n in [
            &mut self.turin,
            &mut self.collegno,
            &mut self.province,
            &mut self.portal,
        ] {
            n.down().await;
        }
        self.hub.shutdown().await.unwrap();
        drop(self.dir);
    }
}

/// A hub client of `entity`.
fn client(dir: &tempfile::TempDir, hub: &Running, entity: &str) -> HubClient {
    client_in(dir, hub, entity, Format::Json)
}

/// A hub client of `entity` signing envelopes in `format`.
fn client_in(dir: &tempfile::TempDir, hub: &Running, entity: &str, format: Format) -> HubClient {
    let pki_dir = dir.path().join("pki");
    let stem = entity.parse::<EntityId>().unwrap().file_stem();
    let mut c = HubClientConfig::new(
        format!("https://127.0.0.1:{}", hub.addr.port()),
        pki_dir.join("ca.crt"),
        pki_dir.join(format!("{stem}.crt")),
        pki_dir.join(format!("{stem}.key")),
    );
    c.format = format;
    c.retry = RetryPolicy {
        attempts: 3,
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
    };
    HubClient::new(&c).unwrap()
}

fn istante(s: &str) -> Istante {
    Istante::parse(s).unwrap()
}

fn luogo(comune: &str, strada: &str) -> Luogo {
    Luogo {
        comune: CodiceIstat::parse(comune).unwrap(),
        strada: strada.into(),
        da: None,
        a: None,
        coordinate: None,
    }
}

/// Roadworks in Turin from 9 to 20 March 2026, of `gravita`.
fn lavori(gravita: Gravita) -> Bozza {
    Bozza {
        tipo: TipoEvento::Lavori,
        titolo: "Rifacimento del manto stradale in corso Francia".into(),
        descrizione: Some("Una corsia per senso di marcia.".into()),
        luoghi: Elenco::new(vec![luogo("001272", "Corso Francia")]).unwrap(),
        periodo: Intervallo {
            inizio: istante("2026-03-09T07:00:00Z"),
            fine: Some(istante("2026-03-20T18:00:00Z")),
        },
        gravita,
    }
}

/// A market on 15 March 2026 on a square of Turin and a road of Collegno.
fn mercato() -> Bozza {
    Bozza {
        tipo: TipoEvento::Manifestazione,
        titolo: "Mercato straordinario".into(),
        descrizione: None,
        luoghi: Elenco::new(vec![
            luogo("001272", "Piazza Vittorio Veneto"),
            luogo("001090", "Corso Francia"),
        ])
        .unwrap(),
        periodo: Intervallo {
            inizio: istante("2026-03-15T06:00:00Z"),
            fine: Some(istante("2026-03-15T15:00:00Z")),
        },
        gravita: Gravita::Bassa,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn news_reach_three_subscribers_and_one_that_was_down_catches_up_in_order() {
    let mut f = Federation::start().await;
    for n in [
        &mut f.turin,
        &mut f.collegno,
        &mut f.portal,
        &mut f.province,
    ] {
        n.up();
    }
    // The first event reaches all three subscribers (not Turin itself, which published it).
    let e = f.ufficio.pubblica(lavori(Gravita::Media)).await.unwrap();
    assert_eq!((e.id.as_str(), e.versione), ("2026-000001", 1));
    let id = e.id.clone();
    for (who, n) in [
        ("the portal", &f.portal),
        ("Collegno", &f.collegno),
        ("the province", &f.province),
    ] {
        n.shows(who, &[(&id, 1)]).await;
    }
    assert!(f.turin.board().is_empty());

    // The province's connector goes down; meanwhile the event is revised, a second one is
    // published and withdrawn, and the first one is revised again.
    f.province.down().await;
    f.clock.advance(time::Duration::hours(1));
    let e2 = f
        .ufficio
        .aggiorna(&id, lavori(Gravita::Alta))
        .await
        .unwrap();
    assert_eq!(e2.versione, 2);
    let m = f.ufficio.pubblica(mercato()).await.unwrap();
    f.portal.shows("the portal", &[(&id, 2), (&m.id, 1)]).await;
    let end = f
        .ufficio
        .termina(&m.id, MotivoFine::Annullato)
        .await
        .unwrap();
    assert_eq!(end.id, m.id);
    let mut later = lavori(Gravita::Alta);
    later.periodo.fine = Some(istante("2026-03-27T18:00:00Z"));
    assert_eq!(f.ufficio.aggiorna(&id, later).await.unwrap().versione, 3);
    // A withdrawn event is no longer listed; nor can it be changed or ended again.
    for (who, n) in [("the portal", &f.portal), ("Collegno", &f.collegno)] {
        n.shows(who, &[(&id, 3)]).await;
    }
    let scheda = f
        .portal
        .abbonato
        .scheda(&TURIN.parse().unwrap(), &m.id)
        .unwrap()
        .unwrap();
    assert_eq!(scheda.fine.unwrap().motivo, MotivoFine::Annullato);
    let refused = f.ufficio.aggiorna(&m.id, mercato()).await.unwrap_err();
    assert!(refused.to_string().contains("has ended"), "{refused}");
    let refused = f
        .ufficio
        .termina(&m.id, MotivoFine::Concluso)
        .await
        .unwrap_err();
    assert!(matches!(refused, ServiceError::Refused(_)), "{refused}");
    // The province saw only the first revision while it was down.
    assert_eq!(f.province.board(), [(id.clone(), 1)]);

    // Back up, it gets what it missed, and ends with the same board as the others.
    f.province.up();
    f.province.shows("the province", &[(&id, 3)]).await;
    assert_eq!(
        f.province.abbonato.bacheca().unwrap(),
        f.portal.abbonato.bacheca().unwrap()
    );
    // It took the four envelopes it missed, the withdrawal among them.
    eventually(10, "the province to process what it missed", || {
        let taken = f
            .province
            .dispatcher
            .processed_tree()
            .scan("")
            .unwrap()
            .into_iter()
            .filter(|(_, p)| p.service == "mobilita.viabilita" && p.outcome == "done")
            .count();
        async move { (taken == 5).then_some(()) }
    })
    .await;
    let withdrawn = f
        .province
        .abbonato
        .scheda(&TURIN.parse().unwrap(), &m.id)
        .unwrap()
        .unwrap();
    assert_eq!(withdrawn.evento.unwrap().versione, 1);
    assert_eq!(withdrawn.fine.unwrap().motivo, MotivoFine::Annullato);
    let voce = &f.province.abbonato.attivi(&Filtro::tutti()).unwrap()[0];
    assert_eq!(voce.pubblicato_da, TURIN.parse::<EntityId>().unwrap());
    assert_eq!(voce.evento.gravita, Gravita::Alta);
    assert_eq!(
        voce.evento.periodo.fine,
        Some(istante("2026-03-27T18:00:00Z"))
    );

    // Listing by area and time.
    let in_area = |a: Area| Filtro {
        aree: vec![a],
        ..Filtro::default()
    };
    let b = &f.collegno.abbonato;
    assert_eq!(
        b.attivi(&in_area(Area::Provincia("001".into())))
            .unwrap()
            .len(),
        1
    );
    assert!(
        b.attivi(&in_area(Area::Comune(
            CodiceIstat::parse("001090").unwrap()
        )))
        .unwrap()
        .is_empty()
    );
    assert_eq!(
        b.attivi(&Filtro::in_corso(istante("2026-03-25T12:00:00Z")))
            .unwrap()
            .len(),
        1
    );
    assert!(
        b.attivi(&Filtro::in_corso(istante("2026-03-28T12:00:00Z")))
            .unwrap()
            .is_empty()
    );

    // The office remembers what it published, revisions and ends.
    let held = f.ufficio.eventi().unwrap();
    assert_eq!(held.len(), 2);
    assert_eq!(held[0].evento.versione, 3);
    assert!(held[1].fine.is_some());
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revisions_delivered_backwards_a_stale_one_and_a_repeat_leave_the_latest() {
    let mut f = Federation::start().await;
    f.portal.up();
    // Collegno is down while three revisions are published.
    let e = f.ufficio.pubblica(lavori(Gravita::Bassa)).await.unwrap();
    let id = e.id.clone();
    f.ufficio
        .aggiorna(&id, lavori(Gravita::Media))
        .await
        .unwrap();
    f.ufficio
        .aggiorna(&id, lavori(Gravita::Alta))
        .await
        .unwrap();
    f.portal.shows("the portal", &[(&id, 3)]).await;

    // When it is back, its inbox is taken in the worst order: newest first.
    let c = f.collegno.dispatcher.client().clone();
    let mut deliveries = eventually(10, "Collegno's three envelopes", || {
        let c = c.clone();
        async move {
            let d = c.lease(16, Duration::from_secs(30)).await.unwrap();
            if d.len() == 3 {
                Some(d)
            } else {
                for x in &d {
                    c.nack(&x.lease).await.unwrap();
                }
                None
            }
        }
    })
    .await;
    deliveries.reverse();
    let mut dispositions = Vec::new();
    for d in &deliveries {
        dispositions.push(f.collegno.dispatcher.dispatch(&d.inbound).await.unwrap());
        c.ack(&d.lease).await.unwrap();
    }
    assert_eq!(dispositions, vec![Disposition::Processed; 3]);
    assert_eq!(f.collegno.board(), [(id.clone(), 3)]);
    let s = f
        .collegno
        .abbonato
        .scheda(&TURIN.parse().unwrap(), &id)
        .unwrap()
        .unwrap();
    assert_eq!(s.evento.unwrap().gravita, Gravita::Alta);
    // The same envelope again is recognised by its id.
    assert_eq!(
        f.collegno
            .dispatcher
            .dispatch(&deliveries[1].inbound)
            .await
            .unwrap(),
        Disposition::AlreadyProcessed
    );

    // A stale revision in a new envelope (Turin sending revision 2 again, in XML this time:
    // checked by the hub against the XSD) is accepted by the hub, processed by the
    // subscribers, and changes nothing.
    f.collegno.up();
    let turin = client_in(&f.dir, &f.hub, TURIN, Format::Xml);
    let stale = Evento {
        id: id.clone(),
        versione: 2,
        tipo: TipoEvento::Lavori,
        titolo: "Vecchia revisione".into(),
        descrizione: None,
        luoghi: Elenco::new(vec![luogo("001272", "Corso Francia")]).unwrap(),
        periodo: Intervallo {
            inizio: istante("2026-03-09T07:00:00Z"),
            fine: None,
        },
        gravita: Gravita::Bassa,
        pubblicato_il: istante("2026-03-02T08:00:00Z"),
    };
    let env = annuncio(&turin, "viabilita-stale", 2, &stale).unwrap();
    assert!(matches!(env.body, snodo_envelopes::Body::Xml(_)));
    turin.submit(&env).await.unwrap();
    for (who, n) in [("the portal", &f.portal), ("Collegno", &f.collegno)] {
        let d = n.dispatcher.clone();
        let envelope_id = env.header.id;
        eventually(20, &format!("{who} to process the stale revision"), || {
            let p = d.processed(TURIN, envelope_id).unwrap();
            async move { p.filter(|p| p.outcome == "done").map(|_| ()) }
        })
        .await;
        assert_eq!(n.board(), [(id.clone(), 3)], "{who}");
        let s = n
            .abbonato
            .scheda(&TURIN.parse().unwrap(), &id)
            .unwrap()
            .unwrap();
        assert_eq!(s.evento.unwrap().titolo, lavori(Gravita::Alta).titolo);
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_hub_refuses_news_from_an_entity_not_entitled_and_news_that_break_the_schema() {
    let mut f = Federation::start().await;
    f.portal.up();
    // The portal subscribes but does not publish: its office's event is refused, and it keeps
    // nothing of it.
    let clock: SharedClock = f.clock.clone();
    let portal_office = Ufficio::open(
        f.portal.dispatcher.client().clone(),
        f.portal.dispatcher.store().clone(),
        clock,
    )
    .unwrap();
    let refused = portal_office
        .pubblica(lavori(Gravita::Media))
        .await
        .unwrap_err();
    let ServiceError::Hub { code, .. } = &refused else {
        panic!("{refused:?}")
    };
    assert_eq!(code, "sender-not-allowed");
    assert!(portal_office.eventi().unwrap().is_empty());
    assert_eq!(portal_office.id_di("x").unwrap(), None);
    assert_eq!(f.portal.dispatcher.outbox_len(), 0);
    // Nor may the prefecture publish.
    let prefecture = f.client(PREFECTURE);
    let e = Evento {
        id: "P-1".into(),
        versione: 1,
        tipo: TipoEvento::Chiusura,
        titolo: "Chiusura".into(),
        descrizione: None,
        luoghi: Elenco::new(vec![luogo("001272", "Via Roma")]).unwrap(),
        periodo: Intervallo {
            inizio: istante("2026-03-09T07:00:00Z"),
            fine: None,
        },
        gravita: Gravita::Alta,
        pubblicato_il: istante("2026-03-02T08:00:00Z"),
    };
    let err = prefecture
        .submit(&annuncio(&prefecture, "p-1", 1, &e).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("sender-not-allowed"), "{err}");

    // A comune may publish, but only as an event to `*` (an event envelope addressed to one
    // entity is not even built): a oneway message to the portal is refused.
    let turin = f.client(TURIN);
    let to_portal = turin
        .envelope(
            Recipient::Entity(PORTAL.parse().unwrap()),
            "mobilita.viabilita",
            "evento",
        )
        .profile(Profile::Oneway)
        .json(serde_json::to_value(&e).unwrap())
        .build()
        .unwrap();
    let err = turin.submit(&to_portal).await.unwrap_err();
    assert_eq!(err.code(), Some("profile-not-allowed"), "{err}");
    // A body against the catalog: revision 0, and a period that ends before it starts.
    for (pointer, value, field) in [
        ("/versione", serde_json::json!(0), "versione"),
        (
            "/periodo/fine",
            serde_json::json!("2026-03-01T00:00:00Z"),
            "periodo",
        ),
        ("/gravita", serde_json::json!("enorme"), "gravita"),
    ] {
        let mut body = serde_json::to_value(&e).unwrap();
        match body.pointer_mut(pointer) {
            Some(v) => *v = value,
            None => {
                body["periodo"]["fine"] = value;
            }
        }
        let env = turin
            .envelope(Recipient::Broadcast, "mobilita.viabilita", "evento")
            .profile(Profile::Event)
            .json(body)
            .build()
            .unwrap();
        let err = turin.submit(&env).await.unwrap_err();
        assert_eq!(err.code(), Some("body-schema-invalid"), "{field}: {err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    // Nothing of it reached the portal.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(f.portal.board().is_empty());
    f.stop().await;
}

/// Runs `config` as `snodo-connector` does, until the returned sender says stop.
async fn connector(config: &std::path::Path) -> (watch::Sender<bool>, JoinHandle<()>) {
    let config = snodo_connectors::config::Config::load(config).unwrap();
    let (stop, shutdown) = watch::channel(false);
    let (started, up) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        snodo_connectors::connector::run(config, shutdown, Some(started))
            .await
            .unwrap();
    });
    up.await.unwrap();
    (stop, task)
}

/// Writes the example `file`, pointed at `hub`, into `dir` as `name`.
fn example(
    dir: &std::path::Path,
    hub: &Running,
    file: &str,
    edit: &[(&str, &str)],
) -> std::path::PathBuf {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/viabilita");
    let mut text = std::fs::read_to_string(examples.join(file))
        .unwrap()
        .replace(
            "https://localhost:8443",
            &format!("https://127.0.0.1:{}", hub.addr.port()),
        );
    for (from, to) in edit {
        assert!(text.contains(from), "{file}: {from}");
        text = text.replace(from, to);
    }
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snodo_connector_runs_the_office_and_the_board_from_their_configurations() {
    let mut f = Federation::start().await;
    let dir = f.dir.path().to_owned();
    f.portal.up();
    // Collegno's board runs as `snodo-connector` from the portal's example, with Collegno's
    // certificate; a short lease, for it is stopped while it may hold one.
    let collegno = example(
        &dir,
        &f.hub,
        "portale.toml",
        &[
            ("portale-comunefacile.", "comune-001090."),
            ("state-portale-viabilita", "state-collegno-viabilita"),
            ("[adapter]", "[receive]\nlease = \"1s\"\n\n[adapter]"),
        ],
    );
    let (collegno_stop, collegno_task) = connector(&collegno).await;
    // Turin's office publishes its one open event (the other is declared withdrawn before it
    // was ever published: nothing is sent for it).
    let office = example(&dir, &f.hub, "viabilita-001272.toml", &[]);
    let (stop, task) = connector(&office).await;
    let titles = |n: &Nodo| -> Vec<(String, u32)> {
        n.abbonato
            .attivi(&Filtro::tutti())
            .unwrap()
            .into_iter()
            .map(|v| (v.evento.titolo, v.evento.versione))
            .collect()
    };
    let first = vec![(
        "Rifacimento del manto stradale in corso Francia".to_owned(),
        1,
    )];
    eventually(20, "the declared event on the portal's board", || {
        let ok = titles(&f.portal) == first;
        async move { ok.then_some(()) }
    })
    .await;
    let _ = stop.send(true);
    task.await.unwrap();

    // Started again unchanged, it publishes nothing; with the title changed, revision 2.
    let (stop, task) = connector(&office).await;
    let _ = stop.send(true);
    task.await.unwrap();
    let changed = example(
        &dir,
        &f.hub,
        "viabilita-001272.toml",
        &[(
            "manto stradale in corso",
            "manto stradale e dei marciapiedi in corso",
        )],
    );
    let (stop, task) = connector(&changed).await;
    let second = vec![(
        "Rifacimento del manto stradale e dei marciapiedi in corso Francia".to_owned(),
        2,
    )];
    eventually(20, "revision 2 on the portal's board", || {
        let ok = titles(&f.portal) == second;
        async move { ok.then_some(()) }
    })
    .await;
    let _ = stop.send(true);
    task.await.unwrap();

    // Collegno's board, read once its connector has stopped (a sled store has one owner),
    // is the portal's; if it was stopped before it took everything, it runs a while again.
    let (mut collegno_stop, mut collegno_task) = (collegno_stop, collegno_task);
    let mut boards_match = false;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = collegno_stop.send(true);
        collegno_task.await.unwrap();
        let store = Store::open(&dir.join("state-collegno-viabilita")).unwrap();
        let board = Abbonato::open(&store).unwrap().bacheca().unwrap();
        drop(store);
        if board == f.portal.abbonato.bacheca().unwrap() {
            boards_match = true;
            break;
        }
        (collegno_stop, collegno_task) = connector(&collegno).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    assert!(boards_match, "Collegno's board never matched the portal's");

    // The office's store holds one event, revision 2, under its declared code.
    let store = Store::open(&dir.join("state-viabilita-001272")).unwrap();
    let ufficio = Ufficio::open(
        client(&f.dir, &f.hub, TURIN),
        store,
        Arc::new(snodo_connectors::SystemClock),
    )
    .unwrap();
    let id = ufficio.id_di("ORD-2026-0412").unwrap().unwrap();
    assert_eq!(ufficio.evento(&id).unwrap().unwrap().evento.versione, 2);
    assert_eq!(ufficio.eventi().unwrap().len(), 1);
    assert_eq!(ufficio.id_di("ORD-2026-0450").unwrap(), None);
    // A code names one event.
    let again = ufficio
        .pubblica_come(Some("ORD-2026-0412"), lavori(Gravita::Bassa))
        .await
        .unwrap_err();
    assert!(
        matches!(&again, ServiceError::Refused(m) if m.contains(&id)),
        "{again}"
    );
    f.stop().await;
}

#[test]
fn the_example_configurations_check_and_bad_data_is_refused_naming_the_field() {
    use snodo_connectors::config::{AdapterSection, Config as ConnectorConfig};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/viabilita");
    for (file, name) in [
        ("viabilita-001272.toml", "viabilita"),
        ("portale.toml", "bacheca-viabilita"),
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
            "viabilita-001272.toml",
            "codice = \"ORD-2026-0450\"",
            "codice = \"ORD-2026-0412\"",
            "annunci[1].codice",
        ),
        (
            "viabilita-001272.toml",
            "gravita = \"media\"",
            "gravita = \"enorme\"",
            "annunci[0].evento.gravita",
        ),
        (
            "viabilita-001272.toml",
            "fine = \"2026-03-20T18:00:00Z\"",
            "fine = \"2026-03-01T18:00:00Z\"",
            "annunci[0].evento.periodo.fine",
        ),
        (
            "viabilita-001272.toml",
            "comune = \"001272\"",
            "comune = \"000272\"",
            "annunci[0].evento.luoghi",
        ),
        (
            "portale.toml",
            "back_office = \"bacheca-viabilita\"",
            "back_office = \"bacheca-viabilita\"\n[adapter.data]\nannunci = []",
            "unknown field `annunci`",
        ),
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
