//! Rooms: unguessable names, the user details a token carries, and room links.
//!
//! A room name uses only `a-z`, `0-9` and `-`: Prosody lower-cases ASCII only and the web
//! client URL-encodes the rest, so any other character would make the token's `room` claim
//! differ from the room the client joins.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Random characters in a generated room name; 20 base-32 characters carry 100 bits.
const NAME_RANDOM_CHARS: usize = 20;
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A room name that Jitsi will join exactly as it is written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RoomName(String);

impl RoomName {
    /// Accepts 1-128 characters of `a-z 0-9 -`.
    pub fn parse(value: &str) -> Result<RoomName, String> {
        let fits = (1..=128).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if fits {
            Ok(RoomName(value.to_owned()))
        } else {
            Err(format!(
                "room name '{value}' must be 1-128 characters of a-z, 0-9 and '-'"
            ))
        }
    }

    /// A fresh name: `prefix` followed by 100 random bits in base 32.
    pub fn generate(prefix: &str) -> RoomName {
        let mut name = String::with_capacity(prefix.len() + NAME_RANDOM_CHARS);
        name.push_str(prefix);
        let mut bytes = [0u8; NAME_RANDOM_CHARS];
        rand::fill(&mut bytes);
        name.extend(
            bytes
                .iter()
                .map(|b| char::from(BASE32[usize::from(b & 31)])),
        );
        RoomName(name)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The link a client opens: `<jitsi url>/<room>`, with `?jwt=<token>` when there is one.
pub fn link(jitsi_url: &str, room: &RoomName, token: Option<&str>) -> String {
    let base = jitsi_url.trim_end_matches('/');
    match token {
        Some(token) => format!("{base}/{room}?jwt={token}"),
        None => format!("{base}/{room}"),
    }
}

/// Who joins: the `context.user` of the token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The lobby's id for the user.
    pub id: String,
    /// Display name; any Unicode text without control characters.
    pub name: String,
    /// E-mail address, shown by some Jitsi features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Avatar image URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
}

impl User {
    /// Lists what is wrong with these details, naming each field.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        text_problem(&mut problems, "user.id", &self.id, 128);
        text_problem(&mut problems, "user.name", &self.name, 200);
        if let Some(email) = &self.email {
            text_problem(&mut problems, "user.email", email, 254);
            if !email.contains('@') || email.contains(char::is_whitespace) {
                problems.push(format!("user.email '{email}' is not an e-mail address"));
            }
        }
        if let Some(avatar) = &self.avatar {
            text_problem(&mut problems, "user.avatar", avatar, 2048);
            if !(avatar.starts_with("https://") || avatar.starts_with("http://")) {
                problems.push("user.avatar must be an http or https URL".to_owned());
            }
        }
        problems
    }
}

fn text_problem(problems: &mut Vec<String>, field: &str, value: &str, max_chars: usize) {
    let chars = value.chars().count();
    if value.trim().is_empty() {
        problems.push(format!("{field} must not be empty"));
    } else if chars > max_chars {
        problems.push(format!(
            "{field} has {chars} characters; at most {max_chars} are allowed"
        ));
    } else if value.chars().any(char::is_control) {
        problems.push(format!("{field} must not contain control characters"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generated names use the allowed alphabet and differ from each other.
    #[test]
    fn generated_names_are_valid_and_distinct() {
        let a = RoomName::generate("cwm-");
        let b = RoomName::generate("cwm-");
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 24);
        assert!(RoomName::parse(a.as_str()).is_ok());
    }

    /// Names with characters Prosody would not match are refused.
    #[test]
    fn room_names_are_checked() {
        for bad in ["", "Room", "a b", "ä", "a/b", &"a".repeat(129)] {
            assert!(RoomName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// Empty, overlong and control-character fields are named; Unicode names are fine.
    #[test]
    fn user_fields_are_checked() {
        let user = |name: &str| User {
            id: "u1".to_owned(),
            name: name.to_owned(),
            email: None,
            avatar: None,
        };
        assert!(user("Zoë 日本 🚀").problems().is_empty());
        assert!(user(" ").problems()[0].contains("user.name must not be empty"));
        assert!(user("a\u{0}b").problems()[0].contains("control"));
        assert!(user(&"x".repeat(201)).problems()[0].contains("201 characters"));
    }

    /// Links join the Jitsi URL, the room and the token.
    #[test]
    fn link_shape() {
        let room = RoomName::parse("r1").expect("valid");
        assert_eq!(
            link("https://meet.example.com/", &room, Some("t")),
            "https://meet.example.com/r1?jwt=t"
        );
        assert_eq!(
            link("https://m.example", &room, None),
            "https://m.example/r1"
        );
    }
}
