//! The configuration from Worker vars and secrets, under the names the core
//! lists in `config::VARIABLES`, parsed once per isolate.

use std::cell::RefCell;
use std::rc::Rc;

use everjust_core::{Config, ConfigError};
use wasm_bindgen::JsValue;
use worker::Env;

thread_local! {
    static CACHE: RefCell<Option<Rc<Result<Config, ConfigError>>>> = const { RefCell::new(None) };
}

/// The parsed configuration. Vars and secrets are fixed for the life of an
/// isolate (a new deployment or secret starts new isolates), so the first
/// parse is kept.
pub fn load(env: &Env) -> Rc<Result<Config, ConfigError>> {
    CACHE.with(|cache| {
        cache
            .borrow_mut()
            .get_or_insert_with(|| Rc::new(Config::from_vars(|name| var(env, name))))
            .clone()
    })
}

/// A var or secret as text. `[vars]` may hold TOML numbers and booleans,
/// which arrive as JavaScript numbers and booleans.
fn var(env: &Env, name: &str) -> Option<String> {
    let value = js_sys::Reflect::get(env.as_ref(), &JsValue::from_str(name)).ok()?;
    if let Some(s) = value.as_string() {
        Some(s)
    } else if let Some(n) = value.as_f64() {
        Some(if n.fract() == 0.0 && n.abs() < 9.0e15 {
            format!("{}", n as i64)
        } else {
            n.to_string()
        })
    } else {
        value.as_bool().map(|b| b.to_string())
    }
}
