//! Path and method matching over the route table. The table (in `routes`)
//! also drives the OpenAPI document, so a route cannot exist undocumented.

use http::Method;

/// One route of the API.
#[derive(Debug)]
pub struct RouteDef<R: 'static> {
    pub method: Method,
    /// matchit syntax: `/v1/projects/{id}/files/{*path}`.
    pub path: &'static str,
    pub route: R,
    pub summary: &'static str,
    pub tag: &'static str,
    /// Whether a bearer token is required.
    pub auth: bool,
}

pub enum Match<R> {
    Found(R, Vec<(String, String)>),
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

pub struct Router<R: 'static> {
    inner: matchit::Router<Vec<(Method, R)>>,
}

impl<R: Copy + 'static> Router<R> {
    pub fn new(table: &'static [RouteDef<R>]) -> Self {
        let mut by_path: Vec<(&'static str, Vec<(Method, R)>)> = Vec::new();
        for def in table {
            match by_path.iter_mut().find(|(p, _)| *p == def.path) {
                Some((_, methods)) => methods.push((def.method.clone(), def.route)),
                None => by_path.push((def.path, vec![(def.method.clone(), def.route)])),
            }
        }
        let mut inner = matchit::Router::new();
        for (path, methods) in by_path {
            // The table is static and tested; a conflict is a programming error caught by tests.
            if let Err(e) = inner.insert(path, methods) {
                panic!("route table conflict at {path}: {e}");
            }
        }
        Self { inner }
    }

    pub fn find(&self, method: &Method, path: &str) -> Match<R> {
        let Ok(m) = self.inner.at(path) else {
            return Match::NotFound;
        };
        let params = m
            .params
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let lookup = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        match m.value.iter().find(|(mm, _)| mm == lookup) {
            Some((_, r)) => Match::Found(*r, params),
            None => Match::MethodNotAllowed(m.value.iter().map(|(mm, _)| mm.clone()).collect()),
        }
    }
}
