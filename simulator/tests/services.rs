//! A short simulation through the library, every service at work: a few comuni with p256
//! keys, the hub in this process, citizens active for 20 s, then time runs on until every
//! conversation is final. Every invariant must hold and every service must have started and
//! finished conversations.

use std::time::Duration;

use snodo_envelopes::pki::KeyType;
use snodo_simulator::hub::Placement;
use snodo_simulator::options::Common;
use snodo_simulator::run::{RunArgs, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_runs_its_conversations_to_a_consistent_end() {
    let dir = tempfile::tempdir().unwrap();
    let args = RunArgs {
        common: Common {
            data_dir: dir.path().to_path_buf(),
            comuni: Some(4),
            csv: snodo_simulator::comuni::default_path(),
            key_type: KeyType::P256,
            hub: Placement::Embedded,
            transport: None,
            nodes: 1,
            snodo: None,
            json: true,
            keep: false,
            report: None,
        },
        duration: Duration::from_secs(20),
        rate: 6.0,
        day: Duration::from_secs(1),
        inhabitants_per_citizen: 5_000,
        seed: Some(7),
        chaos: Vec::new(),
    };
    let s = run(&args).await.unwrap();
    assert!(s.violations.is_empty(), "{:#?}", s.violations);
    assert!(s.journal_verified);
    assert_eq!((s.lost, s.duplicates, s.refused_unexpected), (0, 0, 0));
    for service in [
        "residenza.cambio",
        "tributi.imu.calcolo",
        "pagamenti.imu",
        "mobilita.contravvenzioni",
        "mobilita.ztl",
        "edilizia.permessi",
        "mobilita.viabilita",
    ] {
        let f = s
            .services
            .get(service)
            .unwrap_or_else(|| panic!("{service} never ran: {:?}", s.services.keys()));
        assert!(
            f.conversations_started > 0 && f.conversations_finished == f.conversations_started,
            "{service}: {f:?}"
        );
    }
}
