//! The cross-language test plugin, in Rust. The same behaviour is written in
//! JavaScript (`tests/plugins/poly-js`) and Go (`tests/plugins/poly-go`), and
//! `tests/all/polyglot.rs` checks all three leave the same Redis effects.
//!
//! For action `poly_fail` it returns the error `poly failed`; `poly_spin`
//! loops for ever. The benchmark's actions: `poly_one` makes one host call
//! that does not reach Redis (the tenant) and returns; `poly_write` makes one
//! repository write, the generic key `w:{id}` set to `1`. For any other action, with the trigger's id as user id:
//! increments the user field `visits`, appends the action to the user field
//! `history`, stores `{"action", "tenant", "visits"}` under the generic key
//! `last:{id}`, and logs `poly handled {action} {id}`.

use symphony_sdk::{Error, Expiry, Plugin, Result, generic, json, log, tenant, user};

struct Poly;

impl Plugin for Poly {
    fn on_expire(e: Expiry) -> Result<()> {
        match e.action.as_str() {
            "poly_fail" => return Err(Error::msg("poly failed")),
            "poly_spin" =>
            {
                #[allow(clippy::empty_loop)]
                loop {}
            }
            "poly_one" => {
                return if tenant().is_empty() {
                    Err(Error::msg("no tenant"))
                } else {
                    Ok(())
                };
            }
            "poly_write" => {
                generic::set(&format!("w:{}", e.id), "1", None)?;
                return Ok(());
            }
            _ => {}
        }
        let visits = user::increment_field(&e.id, "visits", 1, None)?;
        user::append_to_list(&e.id, "history", &json::to(&e.action)?, None)?;
        let last = format!(
            r#"{{"action": {}, "tenant": {}, "visits": {visits}}}"#,
            json::to(&e.action)?,
            json::to(&tenant())?
        );
        generic::set(&format!("last:{}", e.id), &last, None)?;
        log::info(&format!("poly handled {} {}", e.action, e.id));
        Ok(())
    }
}

symphony_sdk::export_plugin!(Poly);
