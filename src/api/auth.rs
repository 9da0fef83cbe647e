//! Who may call what: bearer credentials, their roles and the check every protected
//! route runs.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiError, Shared};
use crate::config::{self, Secret};

/// Who a credential belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The lobby: rooms and region choice.
    Lobby,
    /// Operators: the registry.
    Admin,
}

impl Role {
    fn label(self) -> &'static str {
        match self {
            Role::Lobby => "lobby",
            Role::Admin => "admin",
        }
    }
}

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    Role(Role),
    /// Read-only registry routes: either role.
    Either,
}

/// The credential of an `Authorization: Bearer <credential>` value. The scheme's name is
/// matched without regard to case (RFC 9110, 11.1).
pub(crate) fn bearer(value: &str) -> Option<&str> {
    let (scheme, credential) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case("Bearer ").then_some(credential)
}

/// Bearer credentials per role.
#[derive(Debug, Default)]
pub struct Credentials {
    lobby: Vec<Secret>,
    admin: Vec<Secret>,
}

impl Credentials {
    /// The configured credentials plus those in the credential files, one per line.
    pub fn load(server: &config::Server) -> Result<Credentials, Vec<String>> {
        let mut problems = Vec::new();
        let mut read = |list: &[Secret], file: &Option<std::path::PathBuf>| {
            let mut all = list.to_vec();
            if let Some(path) = file {
                let shown = path.display();
                match std::fs::read_to_string(path) {
                    Ok(text) => {
                        let read: Vec<Secret> = credential_lines(&text).collect();
                        if read.is_empty() {
                            problems.push(format!("credential file '{shown}' holds no credential"));
                        }
                        if let Some(why) = read
                            .iter()
                            .find_map(|c| config::credential_problem(c.expose()))
                        {
                            problems.push(format!("credential file '{shown}': {why}"));
                        }
                        all.extend(read);
                    }
                    Err(e) => problems.push(format!("credential file '{shown}': {e}")),
                }
            }
            all
        };
        let lobby = read(&server.lobby_credentials, &server.lobby_credentials_file);
        let admin = read(&server.admin_credentials, &server.admin_credentials_file);
        let shared = |l: &Secret| admin.iter().any(|a| same_secret(a.expose(), l.expose()));
        if lobby.iter().any(shared) {
            problems.push(
                "server.lobby_credentials: a lobby credential is also an admin credential, so \
                 the lobby could change the registry; give lobbies credentials of their own"
                    .to_owned(),
            );
        }
        if problems.is_empty() {
            Ok(Credentials { lobby, admin })
        } else {
            Err(problems)
        }
    }

    pub(crate) fn role_of(&self, presented: &str) -> Option<Role> {
        let holds = |list: &[Secret]| list.iter().any(|c| same_secret(c.expose(), presented));
        if holds(&self.admin) {
            Some(Role::Admin)
        } else if holds(&self.lobby) {
            Some(Role::Lobby)
        } else {
            None
        }
    }

    pub(crate) fn open_for(&self, need: Need) -> bool {
        match need {
            Need::Role(Role::Lobby) => self.lobby.is_empty(),
            Need::Role(Role::Admin) => self.admin.is_empty(),
            Need::Either => self.lobby.is_empty() && self.admin.is_empty(),
        }
    }
}

fn credential_lines(text: &str) -> impl Iterator<Item = Secret> + '_ {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| Secret::new(l.to_owned()))
}

/// Lets a request through only with a bearer credential of the role the route needs.
pub(super) async fn require(
    State((state, need)): State<(Shared, Need)>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let credentials = state.credentials.load();
    if credentials.open_for(need) {
        return Ok(next.run(request).await);
    }
    let unauthorized =
        |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .ok_or_else(|| unauthorized("send a credential as 'Authorization: Bearer <credential>'"))?;
    let role = credentials
        .role_of(presented.trim())
        .ok_or_else(|| unauthorized("the bearer credential is not valid (unknown or revoked)"))?;
    match need {
        Need::Either => {}
        Need::Role(wanted) if wanted == role => {}
        Need::Role(wanted) => {
            let (wanted, role) = (wanted.label(), role.label());
            let message = format!("this route takes {wanted} credentials; this one is for {role}");
            return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", message));
        }
    }
    Ok(next.run(request).await)
}

/// Compares two secrets in time that does not depend on where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equal secrets match; different ones, including prefixes, do not.
    #[test]
    fn secrets_compare() {
        assert!(same_secret("abcdefghijklmnop", "abcdefghijklmnop"));
        assert!(!same_secret("abcdefghijklmnop", "abcdefghijklmno"));
        assert!(!same_secret("abcdefghijklmnop", "Abcdefghijklmnop"));
    }
}
