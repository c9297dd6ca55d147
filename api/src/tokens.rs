//! JWT access tokens (HS256, `iss` = API key): minting for the CLI and `POST /v1/tokens`, and
//! verification for every request, with a reason for each way a token can be bad.

use std::time::Duration;

use engine::ids::UserId;
use engine::perms::Principal;
use jsonwebtoken::errors::ErrorKind as JwtKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::credentials::Credentials;
use crate::error::ApiError;

/// The subject of admin tokens minted by the server.
pub const ADMIN_SUBJECT: &str = "admin";

/// Longest accepted token lifetime (one year).
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// Clock skew tolerated on `exp`.
const LEEWAY_S: u64 = 5;

/// A token's claims.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub exp: i64,
    #[serde(default)]
    pub iat: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// Signs and verifies tokens with the server's credentials.
pub struct TokenCodec {
    issuer: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenCodec {
    /// A codec for `creds`.
    pub fn new(creds: &Credentials) -> TokenCodec {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[creds.api_key.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = LEEWAY_S;
        TokenCodec {
            issuer: creds.api_key.clone(),
            encoding: EncodingKey::from_secret(creds.api_secret.as_bytes()),
            decoding: DecodingKey::from_secret(creds.api_secret.as_bytes()),
            validation,
        }
    }

    /// Mints a token for `user` (or an admin token) valid for `ttl`.
    pub fn mint(&self, user: &UserId, name: Option<&str>, admin: bool, ttl: Duration) -> Result<String, ApiError> {
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(ApiError::bad_request(
                "invalid_ttl",
                "ttl must be between 1 second and 366 days",
            ));
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: user.to_string(),
            name: name.map(str::to_owned),
            exp: now + ttl.as_secs() as i64,
            iat: now,
            admin,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::internal(format!("could not sign a token: {e}")))
    }

    /// Verifies `token` and returns who it speaks for, or a 401 saying what is wrong with it.
    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            let (code, message) = match e.kind() {
                JwtKind::ExpiredSignature => ("token_expired", "the token has expired"),
                JwtKind::InvalidSignature => (
                    "token_bad_signature",
                    "the token's signature does not match this server's secret",
                ),
                JwtKind::InvalidIssuer => ("token_wrong_issuer", "the token was issued for another API key"),
                JwtKind::InvalidAlgorithm => ("token_bad_algorithm", "tokens must be signed with HS256"),
                JwtKind::MissingRequiredClaim(_) => {
                    ("token_malformed", "the token lacks a required claim (iss, sub, exp)")
                }
                _ => ("token_malformed", "the token is not a well-formed JWT"),
            };
            ApiError::unauthorized(code, message)
        })?;
        let c = data.claims;
        let user = UserId::new(c.sub)
            .map_err(|_| ApiError::unauthorized("token_bad_subject", "the token's sub is not a valid user id"))?;
        Ok(Principal {
            user,
            name: c.name,
            admin: c.admin,
        })
    }
}

/// Parses a lifetime such as `1h`, `30m` or `3600` (seconds).
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 1h or 90m: {e}"))?,
    };
    if d.is_zero() || d > MAX_TTL {
        return Err("ttl must be between 1 second and 366 days".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(key: &str, secret: &str) -> TokenCodec {
        TokenCodec::new(&Credentials {
            api_key: key.into(),
            api_secret: secret.into(),
        })
    }

    #[test]
    fn round_trip_and_each_failure_has_its_reason() {
        let c = codec("K", &"s".repeat(32));
        let alice = UserId::new("alice").unwrap();
        let t = c.mint(&alice, Some("Alice"), false, Duration::from_secs(60)).unwrap();
        let p = c.verify(&t).unwrap();
        assert_eq!(
            (p.user.as_str(), p.name.as_deref(), p.admin),
            ("alice", Some("Alice"), false)
        );

        let other_secret = codec("K", &"t".repeat(32))
            .mint(&alice, None, false, Duration::from_secs(60))
            .unwrap();
        assert_eq!(c.verify(&other_secret).unwrap_err().code, "token_bad_signature");
        let other_issuer = codec("J", &"s".repeat(32))
            .mint(&alice, None, false, Duration::from_secs(60))
            .unwrap();
        assert_eq!(c.verify(&other_issuer).unwrap_err().code, "token_wrong_issuer");
        assert_eq!(c.verify("not.a.jwt").unwrap_err().code, "token_malformed");
        assert_eq!(c.verify("").unwrap_err().code, "token_malformed");

        let expired = Claims {
            iss: "K".into(),
            sub: "alice".into(),
            name: None,
            exp: 1_000,
            iat: 0,
            admin: false,
        };
        let t = jsonwebtoken::encode(
            &Header::default(),
            &expired,
            &EncodingKey::from_secret("s".repeat(32).as_bytes()),
        )
        .unwrap();
        assert_eq!(c.verify(&t).unwrap_err().code, "token_expired");
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("soon").is_err());
    }
}
