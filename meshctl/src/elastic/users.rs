//! The Elasticsearch roles and users the deployment runs with, each with the
//! least it needs, made by `meshctl setup users` as the `elastic` superuser
//! (the only job that sees its password):
//!
//! - `meshwatch_fluentd` (role `meshwatch_writer`): Fluentd's writer. Creates
//!   documents in the meshwatch data streams (and the streams themselves on
//!   the first write), nothing else; `monitor` on the cluster only because
//!   fluent-plugin-elasticsearch asks `GET /` for the version at start.
//! - `meshwatch_setup` (role `meshwatch_setup`): the templates job and the
//!   Kibana import. Manages index and component templates (the data-stream
//!   lifecycle is part of the template), waits on cluster health, and holds
//!   the Kibana feature privileges the saved objects need in the default space.
//! - `kibana_system` (built in): only its password is set.
//!
//! Request bodies are built as JSON values, so a password may hold any
//! character; it is never pasted into a shell or a JSON string by hand.

use elasticsearch::security::{
    SecurityChangePasswordParts, SecurityPutRoleParts, SecurityPutUserParts,
};
use serde_json::{json, Value};

use super::*;

/// Role of Fluentd's user.
pub const WRITER_ROLE: &str = "meshwatch_writer";
/// Role of the setup jobs' user.
pub const SETUP_ROLE: &str = "meshwatch_setup";
/// Fluentd's user.
pub const FLUENTD_USER: &str = "meshwatch_fluentd";
/// The setup jobs' user.
pub const SETUP_USER: &str = "meshwatch_setup";
/// Kibana's built-in user towards Elasticsearch.
pub const KIBANA_SYSTEM_USER: &str = "kibana_system";
/// Shortest password `setup users` accepts (Elasticsearch's own floor is 6).
pub const MIN_PASSWORD_CHARS: usize = 16;

/// Index patterns of every data stream Fluentd writes (see the templates).
pub const DATA_STREAM_PATTERNS: &[&str] = &[
    "logs-meshwatch-*",
    "heartbeats-meshwatch-*",
    "alerts-meshwatch-*",
    "deadletter-meshwatch-*",
];

/// Kibana's application name in Elasticsearch's role store (the default
/// `kibana.index` of `.kibana`).
const KIBANA_APPLICATION: &str = "kibana-.kibana";

/// Fluentd's role: write documents into the meshwatch data streams only.
pub fn writer_role() -> Value {
    json!({
        "cluster": ["monitor"],
        "indices": [{
            "names": DATA_STREAM_PATTERNS,
            // create_doc: op_type create only (no overwrite, no delete);
            // create_index/auto_configure: the data stream on its first
            // write; view_index_metadata: the bulk API's index resolution.
            "privileges": ["create_doc", "create_index", "auto_configure", "view_index_metadata"]
        }],
        "metadata": { "managed_by": "meshctl setup users" }
    })
}

/// The setup jobs' role: templates, cluster health, and the Kibana saved
/// objects meshctl imports (data views, searches, visualizations, dashboard).
pub fn setup_role() -> Value {
    json!({
        "cluster": ["manage_index_templates", "monitor"],
        "indices": [],
        "applications": [{
            "application": KIBANA_APPLICATION,
            "privileges": [
                "feature_indexPatterns.all",
                "feature_discover.all",
                "feature_visualize.all",
                "feature_dashboard.all",
                "feature_savedObjectsManagement.all"
            ],
            "resources": ["space:default"]
        }],
        "metadata": { "managed_by": "meshctl setup users" }
    })
}

/// The body that creates or updates a native user with `password`.
pub fn user_body(password: &str, role: &str, full_name: &str) -> Value {
    json!({
        "password": password,
        "roles": [role],
        "full_name": full_name,
        "metadata": { "managed_by": "meshctl setup users" }
    })
}

/// The body that sets a user's password.
pub fn password_body(password: &str) -> Value {
    json!({ "password": password })
}

/// Why a password is refused, or `None` when it is usable: long enough and
/// not one of the placeholders an example file ever carried.
pub fn password_problem(password: &str) -> Option<String> {
    let lower = password.to_ascii_lowercase();
    if lower.starts_with("change-me") || lower.starts_with("changeme") || lower == "password" {
        return Some("is an example value; run scripts/secrets to generate .env".into());
    }
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Some(format!(
            "has {chars} characters; at least {MIN_PASSWORD_CHARS} are required (scripts/secrets generates them)"
        ));
    }
    None
}

impl Elastic {
    /// Creates or replaces the role `name`. Idempotent.
    pub async fn put_role(&self, name: &str, body: Value) -> Result<(), ElasticError> {
        let response = self
            .client()
            .security()
            .put_role(SecurityPutRoleParts::Name(name))
            .body(body)
            .send()
            .await
            .map_err(|e| unreachable(Self::WHAT, self.url(), &e))?;
        let request = format!("PUT _security/role/{name}");
        read_json(Self::WHAT, self.url(), &request, response).await?;
        Ok(())
    }

    /// Creates the native user `name` or updates it (its password included).
    pub async fn put_user(&self, name: &str, body: Value) -> Result<(), ElasticError> {
        let response = self
            .client()
            .security()
            .put_user(SecurityPutUserParts::Username(name))
            .body(body)
            .send()
            .await
            .map_err(|e| unreachable(Self::WHAT, self.url(), &e))?;
        let request = format!("PUT _security/user/{name}");
        read_json(Self::WHAT, self.url(), &request, response).await?;
        Ok(())
    }

    /// Sets the password of the (built-in) user `name`.
    pub async fn set_password(&self, name: &str, password: &str) -> Result<(), ElasticError> {
        let response = self
            .client()
            .security()
            .change_password(SecurityChangePasswordParts::Username(name))
            .body(password_body(password))
            .send()
            .await
            .map_err(|e| unreachable(Self::WHAT, self.url(), &e))?;
        let request = format!("POST _security/user/{name}/_password");
        read_json(Self::WHAT, self.url(), &request, response).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every character a shell or a hand-written JSON string would trip on.
    const NASTY: &str = "a\"b\\c$d e*f'g`h{i}j#k\nl😀m$(n)%o";

    #[test]
    fn passwords_travel_unchanged_whatever_their_characters() {
        for body in [user_body(NASTY, WRITER_ROLE, "x"), password_body(NASTY)] {
            let text = serde_json::to_string(&body).unwrap();
            let back: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back["password"], NASTY);
        }
    }

    #[test]
    fn writer_role_only_creates_documents_in_the_meshwatch_streams() {
        let role = writer_role();
        assert_eq!(role["cluster"], json!(["monitor"]));
        let indices = role["indices"].as_array().unwrap();
        assert_eq!(indices.len(), 1);
        let privileges: Vec<&str> = indices[0]["privileges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        for forbidden in ["all", "write", "index", "delete", "manage", "read"] {
            assert!(!privileges.contains(&forbidden), "{forbidden}");
        }
        for name in indices[0]["names"].as_array().unwrap() {
            assert!(name.as_str().unwrap().contains("-meshwatch-"), "{name}");
        }
        assert!(role.get("applications").is_none());
    }

    #[test]
    fn setup_role_manages_templates_and_kibana_objects_but_no_data() {
        let role = setup_role();
        assert_eq!(
            role["cluster"],
            json!(["manage_index_templates", "monitor"])
        );
        assert_eq!(role["indices"], json!([]));
        assert_eq!(role["applications"][0]["application"], "kibana-.kibana");
        assert_eq!(
            role["applications"][0]["resources"],
            json!(["space:default"])
        );
    }

    #[test]
    fn example_and_short_passwords_are_refused() {
        assert!(password_problem("change-me-elastic").is_some());
        assert!(password_problem("CHANGEME").is_some());
        assert!(password_problem("short").is_some());
        assert!(password_problem(NASTY).is_none());
        assert!(password_problem("Zr3bT9qLk2VwX8mN4pJd").is_none());
    }
}
