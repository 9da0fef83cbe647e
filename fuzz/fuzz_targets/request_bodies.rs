//! The JSON bodies of every route that takes one, deserialised as the `Json` extractor does
//! and then validated as the handlers do. Whatever is refused is refused with a 4xx, and
//! whatever is accepted is a value the rest of geobridge accepts too.
#![no_main]

use geobridge::api::registry::{AdminStateInput, BridgeInput, RegionInput};
use geobridge::api::{AddParticipant, CreateRoom, parse_ip};
use geobridge::catalog::check_bridge_url;
use geobridge::room::{RoomName, User};
use libfuzzer_sys::fuzz_target;

/// Which body: the first byte; then the path parameter, a NUL byte and the JSON body.
#[derive(Debug)]
enum Input<'a> {
    CreateRoom(&'a [u8]),
    AddParticipant(&'a str, &'a [u8]),
    PutRegion(&'a str, &'a [u8]),
    PutBridge(&'a str, &'a [u8]),
    PatchBridge(&'a [u8]),
}

fn input(data: &[u8]) -> Option<Input<'_>> {
    let (&kind, rest) = data.split_first()?;
    let split = rest.iter().position(|&b| b == 0).unwrap_or(0);
    let id = std::str::from_utf8(&rest[..split]).ok()?;
    let body = rest.get(split + 1..).unwrap_or_default();
    Some(match kind % 5 {
        0 => Input::CreateRoom(body),
        1 => Input::AddParticipant(id, body),
        2 => Input::PutRegion(id, body),
        3 => Input::PutBridge(id, body),
        _ => Input::PatchBridge(body),
    })
}

fn user_and_ip(user: &User, client_ip: Option<&str>) {
    let _ = user.problems();
    if let Some(Err(e)) = client_ip.map(|ip| parse_ip("client_ip", ip)) {
        assert!(e.status().is_client_error());
    }
}

fuzz_target!(|data: &[u8]| match input(data) {
    None => {}
    Some(Input::CreateRoom(body)) => {
        if let Ok(room) = serde_json::from_slice::<CreateRoom>(body) {
            user_and_ip(&room.user, room.client_ip.as_deref());
        }
    }
    Some(Input::AddParticipant(room, body)) => {
        let _ = RoomName::parse(room);
        if let Ok(guest) = serde_json::from_slice::<AddParticipant>(body) {
            user_and_ip(&guest.user, guest.client_ip.as_deref());
        }
    }
    Some(Input::PutRegion(id, body)) => {
        if let Ok(region) = serde_json::from_slice::<RegionInput>(body) {
            match region.check(id) {
                Ok(region) => {
                    assert_eq!(region.id.as_str(), id);
                    assert!(region.point.check().is_ok());
                }
                Err(e) => assert!(e.status().is_client_error()),
            }
        }
    }
    Some(Input::PutBridge(id, body)) => {
        if let Ok(bridge) = serde_json::from_slice::<BridgeInput>(body) {
            match bridge.check(id) {
                Ok(bridge) => {
                    assert!(bridge.weight >= 1);
                    assert!(check_bridge_url(&bridge.url).is_ok(), "{}", bridge.url);
                }
                Err(e) => assert!(e.status().is_client_error()),
            }
        }
    }
    Some(Input::PatchBridge(body)) => {
        let _ = serde_json::from_slice::<AdminStateInput>(body);
    }
});
