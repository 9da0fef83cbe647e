//! Region choice over HTTP on the shipped GeoIP database and the example regions.

use crate::helpers::{Options, spawn_app};

/// The addresses the issue names land in the regions it names.
#[tokio::test]
async fn known_addresses_pick_expected_regions() {
    let app = spawn_app(Options::default()).await;
    let cases = [
        ("8.8.8.8", "us-west"),
        ("81.2.69.142", "eu-west"),
        ("1.1.1.1", "ap-southeast-2"),
        ("2001:4860:4860::8888", "ca-central"),
        ("34.82.0.1", "us-west"),
        ("::ffff:8.8.8.8", "us-west"),
    ];
    for (ip, region) in cases {
        let answer = app.select(ip).await;
        assert_eq!(answer.status, 200, "{ip}: {}", answer.text);
        assert_eq!(answer.json["region"], region, "{ip}: {}", answer.text);
        assert_eq!(answer.json["decision"]["reason"], "nearest", "{ip}");
        assert_eq!(
            answer.json["decision"]["unwatched"], true,
            "{ip}: no bridges registered"
        );
    }
}

/// A private address has no location and gets the default region, saying so.
#[tokio::test]
async fn private_address_gets_default_region() {
    let app = spawn_app(Options::default()).await;
    for ip in [
        "10.0.0.1",
        "192.168.1.1",
        "127.0.0.1",
        "fd00::1",
        "100.64.1.1",
    ] {
        let answer = app.select(ip).await;
        assert_eq!(answer.json["region"], "eu-central", "{ip}: {}", answer.text);
        assert_eq!(answer.json["decision"]["reason"], "default", "{ip}");
        assert!(answer.json["location"].is_null(), "{ip}");
    }
}

/// Country and network pins take precedence over distance.
#[tokio::test]
async fn pins_take_precedence() {
    let pins = "\n[pins]\ncountries = { GB = \"us-east\" }\n\
                networks = { \"10.1.0.0/16\" = \"ap-south\" }\n";
    let app = spawn_app(Options {
        extra_toml: pins.to_owned(),
        ..Options::default()
    })
    .await;
    let gb = app.select("81.2.69.142").await;
    assert_eq!(
        (
            gb.json["region"].as_str(),
            gb.json["decision"]["reason"].as_str()
        ),
        (Some("us-east"), Some("country_pin")),
        "{}",
        gb.text
    );
    let lan = app.select("10.1.2.3").await;
    assert_eq!(lan.json["region"], "ap-south", "{}", lan.text);
    assert_eq!(lan.json["decision"]["reason"], "network_pin");
    let other_lan = app.select("10.2.2.3").await;
    assert_eq!(other_lan.json["region"], "eu-central");
}

/// The decision lists every region with its distance, nearest first.
#[tokio::test]
async fn decision_explains_every_region() {
    let app = spawn_app(Options::default()).await;
    let answer = app.select("81.2.69.142").await;
    let regions = answer.json["decision"]["regions"]
        .as_array()
        .expect("regions")
        .clone();
    assert_eq!(regions.len(), 10);
    assert_eq!(regions[0]["region"], "eu-west");
    let distances: Vec<f64> = regions
        .iter()
        .map(|r| r["distance_km"].as_f64().expect("km"))
        .collect();
    assert!(distances.windows(2).all(|w| w[0] <= w[1]), "{distances:?}");
    assert!(distances[0] < 300.0, "{distances:?}");
    assert_eq!(answer.json["location"]["country"], "GB");
    assert_eq!(answer.json["location"]["continent"], "EU");
}
