//! The `Crypto` port over Web Crypto: `getRandomValues` for randomness and
//! `subtle.deriveBits` for PBKDF2, which runs natively and is far faster
//! than PBKDF2 compiled to wasm.

use async_trait::async_trait;
use everjust_core::ports::crypto::{pbkdf2_sha256_pure, Crypto};
use js_sys::{Array, ArrayBuffer, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{CryptoKey, Pbkdf2Params, WorkerGlobalScope};

/// `getRandomValues` fills at most 65,536 bytes per call.
const MAX_RANDOM_CHUNK: usize = 65_536;

pub struct WebCrypto;

fn web_crypto() -> Result<web_sys::Crypto, JsValue> {
    js_sys::global()
        .unchecked_into::<WorkerGlobalScope>()
        .crypto()
}

#[async_trait(?Send)]
impl Crypto for WebCrypto {
    fn fill_random(&self, buf: &mut [u8]) {
        // Without a source of randomness nothing secure can be made: stop.
        let crypto = web_crypto().expect("crypto.getRandomValues is available in Workers");
        for chunk in buf.chunks_mut(MAX_RANDOM_CHUNK) {
            crypto
                .get_random_values_with_u8_array(chunk)
                .expect("crypto.getRandomValues succeeds");
        }
    }

    async fn pbkdf2_sha256(&self, password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
        match pbkdf2_web(password, salt, iterations).await {
            Ok(key) => key,
            Err(e) => {
                // Workers refuses more than 100,000 iterations; the portable
                // implementation gives the same bytes, only slower.
                worker::console_warn!(
                    "crypto: Web Crypto PBKDF2 failed ({e:?}); using the portable one"
                );
                pbkdf2_sha256_pure(password, salt, iterations)
            }
        }
    }
}

async fn pbkdf2_web(password: &[u8], salt: &[u8], iterations: u32) -> Result<[u8; 32], JsValue> {
    let subtle = web_crypto()?.subtle();
    let usages = Array::of1(&JsValue::from_str("deriveBits"));
    let key =
        subtle.import_key_with_str("raw", &Uint8Array::from(password), "PBKDF2", false, &usages)?;
    let key: CryptoKey = JsFuture::from(key).await?.dyn_into()?;
    let params = Pbkdf2Params::new(
        "PBKDF2",
        &JsValue::from_str("SHA-256"),
        iterations,
        &Uint8Array::from(salt),
    );
    let bits = JsFuture::from(subtle.derive_bits_with_object(&params, &key, 256)?).await?;
    let bits = Uint8Array::new(&bits.dyn_into::<ArrayBuffer>()?.into());
    let mut out = [0u8; 32];
    if bits.length() as usize != out.len() {
        return Err(JsValue::from_str("deriveBits returned the wrong length"));
    }
    bits.copy_to(&mut out);
    Ok(out)
}
