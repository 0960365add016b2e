//! The walker: checks each table's keys against the schema and each value's
//! type, pushing every problem, and builds the [`RawConfig`].

use toml_edit::{ImDocument, Item, TableLike, Value};

use super::suggest::suggest;
use super::*;
use crate::config::error::Issue;

/// Walks a parsed document into a [`RawConfig`], pushing every unknown key
/// and wrongly typed value into `issues`. Wrong values are left out (`None`)
/// so later checks do not pile further errors onto them.
pub(crate) fn read(doc: &ImDocument<&str>, issues: &mut Vec<Issue>) -> RawConfig {
    let mut r = Reader { issues };
    let root = Tbl {
        t: doc.as_table(),
        at: 0,
        name: "the top level".to_owned(),
    };
    r.check_keys(&root, TOP_KEYS);
    let mut raw = RawConfig::default();
    if let Some(t) = r.sub_table(&root, "server", "[server]", SERVER_KEYS) {
        raw.server = r.server(&t);
    }
    if let Some(t) = r.sub_table(&root, "admin", "[admin]", ADMIN_KEYS) {
        raw.admin = RawAdmin {
            listen: r.string(&t, "listen"),
            token_file: r.string(&t, "token_file"),
        };
    }
    if let Some(t) = r.sub_table(&root, "state", "[state]", STATE_KEYS) {
        raw.state = RawState {
            dir: r.string(&t, "dir"),
        };
    }
    if let Some(t) = r.sub_table(&root, "upstreams", "[upstreams]", &[]) {
        raw.upstreams = r.upstreams(&t);
    }
    if let Some(t) = r.sub_table(&root, "fleet", "[fleet]", FLEET_KEYS) {
        raw.fleet = Some(r.fleet(&t));
    }
    raw.routes = r
        .tables(&root, "routes", "[[routes]]", ROUTE_KEYS)
        .iter()
        .map(|t| r.route(t))
        .collect();
    raw
}

/// A table (or inline table) being read, with a name for messages.
struct Tbl<'a> {
    t: &'a dyn TableLike,
    at: usize,
    name: String,
}

impl Tbl<'_> {
    /// Where `key` is written, or the table itself when it has no span.
    fn key_at(&self, key: &str) -> usize {
        self.t
            .key(key)
            .and_then(|k| k.span())
            .map_or(self.at, |s| s.start)
    }
}

struct Reader<'i> {
    issues: &'i mut Vec<Issue>,
}

impl Reader<'_> {
    fn push(&mut self, at: usize, message: String) {
        self.issues.push(Issue::new(at, message));
    }

    /// Reports every key of `t` not in `allowed`.
    fn check_keys(&mut self, t: &Tbl<'_>, allowed: &[&str]) {
        for (key, _) in t.t.iter() {
            if !allowed.contains(&key) {
                let hint = suggest(key, allowed)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                let expected = if allowed.is_empty() {
                    String::new()
                } else {
                    format!("; expected one of: {}", allowed.join(", "))
                };
                let msg = format!("unknown key `{key}` in {}{hint}{expected}", t.name);
                self.push(t.key_at(key), msg);
            }
        }
    }

    /// `key` of `parent` as a table whose keys are checked; `None` when
    /// absent or not a table (reported).
    fn sub_table<'a>(
        &mut self,
        parent: &Tbl<'a>,
        key: &str,
        name: &str,
        allowed: &[&str],
    ) -> Option<Tbl<'a>> {
        let item = parent.t.get(key)?;
        self.as_table(item, parent.key_at(key), key, &parent.name, name, allowed)
    }

    fn as_table<'a>(
        &mut self,
        item: &'a Item,
        key_at: usize,
        key: &str,
        parent: &str,
        name: &str,
        allowed: &[&str],
    ) -> Option<Tbl<'a>> {
        let at = item.span().map_or(key_at, |s| s.start);
        let Some(t) = item.as_table_like() else {
            let found = item.type_name();
            self.push(
                at,
                format!("`{key}` in {parent} must be a table, found {found}"),
            );
            return None;
        };
        let tbl = Tbl {
            t,
            at,
            name: name.to_owned(),
        };
        if !allowed.is_empty() {
            self.check_keys(&tbl, allowed);
        }
        Some(tbl)
    }

    /// `key` as an array of tables (`[[key]]` or `key = [{..}, ..]`).
    fn tables<'a>(
        &mut self,
        parent: &Tbl<'a>,
        key: &str,
        name: &str,
        allowed: &[&str],
    ) -> Vec<Tbl<'a>> {
        let Some(item) = parent.t.get(key) else {
            return Vec::new();
        };
        let key_at = parent.key_at(key);
        if let Some(aot) = item.as_array_of_tables() {
            return aot
                .iter()
                .map(|t| {
                    let tbl = Tbl {
                        t,
                        at: t.span().map_or(key_at, |s| s.start),
                        name: name.to_owned(),
                    };
                    self.check_keys(&tbl, allowed);
                    tbl
                })
                .collect();
        }
        if let Some(arr) = item.as_array() {
            let mut out = Vec::new();
            for v in arr.iter() {
                let at = v.span().map_or(key_at, |s| s.start);
                if let Some(t) = v.as_inline_table() {
                    let tbl = Tbl {
                        t,
                        at,
                        name: name.to_owned(),
                    };
                    self.check_keys(&tbl, allowed);
                    out.push(tbl);
                } else {
                    let msg = format!(
                        "`{key}` in {} must contain only tables, found {}",
                        parent.name,
                        v.type_name()
                    );
                    self.push(at, msg);
                }
            }
            return out;
        }
        let at = item.span().map_or(key_at, |s| s.start);
        let msg = format!(
            "`{key}` in {} must be an array of tables ([[{key}]]), found {}",
            parent.name,
            item.type_name()
        );
        self.push(at, msg);
        Vec::new()
    }

    /// A scalar of one TOML type; a wrong type is reported and gives `None`.
    fn scalar<'a, T>(
        &mut self,
        t: &Tbl<'a>,
        key: &str,
        want: &str,
        get: impl Fn(&'a Value) -> Option<T>,
    ) -> Opt<T> {
        let item = t.t.get(key)?;
        let at = item.span().map_or_else(|| t.key_at(key), |s| s.start);
        match item.as_value().and_then(get) {
            Some(value) => Some(Sp { value, at }),
            None => {
                let msg = format!(
                    "`{key}` in {} must be {want}, found {}",
                    t.name,
                    item_type(item)
                );
                self.push(at, msg);
                None
            }
        }
    }

    fn string(&mut self, t: &Tbl<'_>, key: &str) -> Opt<String> {
        self.scalar(t, key, "a string", |v| v.as_str().map(str::to_owned))
    }

    fn integer(&mut self, t: &Tbl<'_>, key: &str) -> Opt<i64> {
        self.scalar(t, key, "an integer", Value::as_integer)
    }

    fn number(&mut self, t: &Tbl<'_>, key: &str) -> Opt<f64> {
        self.scalar(t, key, "a number", as_number)
    }

    fn boolean(&mut self, t: &Tbl<'_>, key: &str) -> Opt<bool> {
        self.scalar(t, key, "true or false", Value::as_bool)
    }

    /// An inline array whose elements all convert; any bad element is
    /// reported and the whole list is `None`.
    fn list<T>(
        &mut self,
        t: &Tbl<'_>,
        key: &str,
        want: &str,
        get: impl Fn(&Value) -> Option<T>,
    ) -> List<T> {
        let arr = self.scalar(t, key, &format!("an array of {want}"), |v| v.as_array())?;
        let mut out = Vec::new();
        let mut ok = true;
        for v in arr.value.iter() {
            let at = v.span().map_or(arr.at, |s| s.start);
            match get(v) {
                Some(value) => out.push(Sp { value, at }),
                None => {
                    ok = false;
                    let msg = format!(
                        "`{key}` in {} must contain only {want}, found {}",
                        t.name,
                        v.type_name()
                    );
                    self.push(at, msg);
                }
            }
        }
        ok.then_some(Sp {
            value: out,
            at: arr.at,
        })
    }

    fn fleet(&mut self, t: &Tbl<'_>) -> RawFleet {
        RawFleet {
            at: t.at,
            etcd: self.list(t, "etcd", "strings", str_value),
            prefix: self.string(t, "prefix"),
            replica: self.string(t, "replica"),
            lease_ttl: self.string(t, "lease_ttl"),
            token_file: self.string(t, "token_file"),
            user: self.string(t, "user"),
            ca: self.string(t, "ca"),
        }
    }

    fn server(&mut self, t: &Tbl<'_>) -> RawServer {
        let tls = self
            .sub_table(t, "tls", "server.tls", TLS_KEYS)
            .map(|tls| RawTls {
                at: tls.at,
                cert: self.string(&tls, "cert"),
                key: self.string(&tls, "key"),
            });
        RawServer {
            listen: self.string(t, "listen"),
            arm_header: self.string(t, "arm_header"),
            workers: self.integer(t, "workers"),
            tls,
            request_timeout: self.string(t, "request_timeout"),
            header_read_timeout: self.string(t, "header_read_timeout"),
            keepalive_timeout: self.string(t, "keepalive_timeout"),
            shutdown_grace: self.string(t, "shutdown_grace"),
            max_body_bytes: self.integer(t, "max_body_bytes"),
            max_header_bytes: self.integer(t, "max_header_bytes"),
            max_headers: self.integer(t, "max_headers"),
            connect_timeout: self.string(t, "connect_timeout"),
            max_connections: self.integer(t, "max_connections"),
            access_log_sample: self.number(t, "access_log_sample"),
        }
    }

    fn upstreams(&mut self, t: &Tbl<'_>) -> Vec<RawUpstream> {
        let mut out = Vec::new();
        for (name, item) in t.t.iter() {
            let key_at = t.key_at(name);
            let table_name = format!("[upstreams.{name}]");
            let Some(u) = self.as_table(
                item,
                key_at,
                name,
                "[upstreams]",
                &table_name,
                UPSTREAM_KEYS,
            ) else {
                continue;
            };
            let outlier = self
                .sub_table(
                    &u,
                    "outlier",
                    &format!("{table_name}.outlier"),
                    OUTLIER_KEYS,
                )
                .map(|o| RawOutlier {
                    consecutive_failures: self.integer(&o, "consecutive_failures"),
                    base_ejection: self.string(&o, "base_ejection"),
                    max_ejection: self.string(&o, "max_ejection"),
                });
            let health_check = self
                .sub_table(
                    &u,
                    "health_check",
                    &format!("{table_name}.health_check"),
                    HEALTH_KEYS,
                )
                .map(|h| RawHealthCheck {
                    at: h.at,
                    path: self.string(&h, "path"),
                    interval: self.string(&h, "interval"),
                    timeout: self.string(&h, "timeout"),
                    grpc_service: self.string(&h, "grpc_service"),
                });
            out.push(RawUpstream {
                name: Sp {
                    value: name.to_owned(),
                    at: key_at,
                },
                endpoints: self.list(&u, "endpoints", "strings", str_value),
                outlier,
                health_check,
                tls_ca: self.string(&u, "tls_ca"),
                protocol: self.string(&u, "protocol"),
            });
        }
        out
    }

    fn route(&mut self, t: &Tbl<'_>) -> RawRoute {
        let matcher = self
            .sub_table(t, "match", "routes.match", MATCH_KEYS)
            .map(|m| RawMatch {
                host: self.string(&m, "host"),
                path_prefix: self.string(&m, "path_prefix"),
            });
        let rules = self
            .tables(t, "rules", "[[routes.rules]]", RULE_KEYS)
            .iter()
            .map(|r| self.rule(r))
            .collect();
        let ramp = self
            .sub_table(t, "ramp", "[routes.ramp]", RAMP_KEYS)
            .map(|r| self.ramp(&r));
        let shadow = self
            .sub_table(t, "shadow", "[routes.shadow]", SHADOW_KEYS)
            .map(|s| self.shadow(&s));
        RawRoute {
            at: t.at,
            name: self.string(t, "name"),
            matcher,
            stable: self.string(t, "stable"),
            canary: self.string(t, "canary"),
            canary_weight: self.number(t, "canary_weight"),
            sticky: self.string(t, "sticky"),
            salt: self.string(t, "salt"),
            fallback: self.boolean(t, "fallback"),
            fallback_budget: self.number(t, "fallback_budget"),
            rules,
            ramp,
            shadow,
            grpc_error_codes: self.list(t, "grpc_error_codes", "strings", str_value),
            grpc_idempotent: self.list(t, "grpc_idempotent", "strings", str_value),
        }
    }

    fn shadow(&mut self, t: &Tbl<'_>) -> RawShadow {
        RawShadow {
            at: t.at,
            percent: self.number(t, "percent"),
            methods: self.list(t, "methods", "strings", str_value),
            max_in_flight: self.integer(t, "max_in_flight"),
            timeout: self.string(t, "timeout"),
            items: self.string(t, "items"),
            item_id: self.string(t, "item_id"),
            k: self.integer(t, "k"),
            ignore: self.list(t, "ignore", "strings", str_value),
            noise_percent: self.number(t, "noise_percent"),
            strip_credentials: self.boolean(t, "strip_credentials"),
        }
    }

    fn rule(&mut self, t: &Tbl<'_>) -> RawRule {
        let when = self
            .sub_table(t, "when", "routes.rules.when", WHEN_KEYS)
            .map(|w| RawWhen {
                at: w.at,
                header: self.string(&w, "header"),
                cookie: self.string(&w, "cookie"),
                query: self.string(&w, "query"),
                equals: self.string(&w, "equals"),
                regex: self.string(&w, "regex"),
                sticky_in: self.list(&w, "sticky_in", "strings", str_value),
            });
        RawRule {
            at: t.at,
            when,
            to: self.string(t, "to"),
        }
    }

    fn ramp(&mut self, t: &Tbl<'_>) -> RawRamp {
        RawRamp {
            at: t.at,
            steps: self.list(t, "steps", "numbers", as_number),
            interval: self.string(t, "interval"),
            tick: self.string(t, "tick"),
            min_requests: self.integer(t, "min_requests"),
            baseline: self.string(t, "baseline"),
            confidence: self.number(t, "confidence"),
            max_error_rate_increase: self.number(t, "max_error_rate_increase"),
            max_p99_increase: self.number(t, "max_p99_increase"),
            gate_ratios: self.list(t, "gate_ratios", "numbers", as_number),
            max_step_duration: self.string(t, "max_step_duration"),
            prometheus_url: self.string(t, "prometheus_url"),
            failures_before_rollback: self.integer(t, "failures_before_rollback"),
            prometheus_checks: self
                .tables(
                    t,
                    "prometheus_checks",
                    "[[routes.ramp.prometheus_checks]]",
                    PROM_CHECK_KEYS,
                )
                .iter()
                .map(|c| RawPromCheck {
                    at: c.at,
                    name: self.string(c, "name"),
                    query: self.string(c, "query"),
                    min_ratio: self.number(c, "min_ratio"),
                    max_ratio: self.number(c, "max_ratio"),
                    min: self.number(c, "min"),
                    max: self.number(c, "max"),
                })
                .collect(),
            shadow: self.string(t, "shadow"),
            min_rbo: self.number(t, "min_rbo"),
            segments: self.string(t, "segments"),
            segment_values: self.list(t, "segment_values", "strings", str_value),
        }
    }
}

/// Integers are accepted where numbers are expected (`steps = [1, 5]`).
fn as_number(v: &Value) -> Option<f64> {
    // i64 → f64 is exact for every value a config can sensibly hold.
    #[allow(clippy::cast_precision_loss)]
    v.as_float().or_else(|| v.as_integer().map(|i| i as f64))
}

fn str_value(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// "string", "integer", ..., "table": what was actually written.
fn item_type(item: &Item) -> &'static str {
    match item.as_value() {
        Some(v) => v.type_name(),
        None => item.type_name(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_str(text: &str) -> (RawConfig, Vec<String>) {
        let mut issues = Vec::new();
        let raw = match ImDocument::parse(text) {
            Ok(doc) => read(&doc, &mut issues),
            Err(e) => panic!("test TOML must parse: {e}"),
        };
        (raw, issues.into_iter().map(|i| i.message).collect())
    }

    #[test]
    fn collects_every_unknown_key() {
        let (_, msgs) = read_str(
            "bogus = 1\n[server]\nlisen = \"x\"\n[[routes]]\nname = \"r\"\nweigth = 5\n\
             [routes.ramp]\nstep = [1]\n[[routes.rules]]\nwhen = { header = \"a\", equal = \"b\" }\n",
        );
        assert_eq!(msgs.len(), 5, "{msgs:#?}");
        assert!(msgs[0]
            .starts_with("unknown key `bogus` in the top level; expected one of: server, admin"));
        assert!(msgs[1].starts_with("unknown key `lisen` in [server] (did you mean `listen`?)"));
        assert!(msgs.iter().any(|m| m.starts_with(
            "unknown key `weigth` in [[routes]]; expected one of: name, match, stable"
        )));
        assert!(msgs
            .iter()
            .any(|m| m.starts_with("unknown key `step` in [routes.ramp] (did you mean `steps`?)")));
        assert!(msgs
            .iter()
            .any(|m| m
                .starts_with("unknown key `equal` in routes.rules.when (did you mean `equals`?)")));
    }

    #[test]
    fn reports_wrong_types_and_keeps_going() {
        let (raw, mut msgs) = read_str(
            "[server]\nworkers = \"4\"\nlisten = 8080\n[upstreams.a]\nendpoints = [\"x:1\", 2]\n\
             [[routes]]\nname = \"r\"\ncanary_weight = 5\nfallback = \"yes\"\n",
        );
        msgs.sort();
        assert_eq!(
            msgs,
            [
                "`endpoints` in [upstreams.a] must contain only strings, found integer",
                "`fallback` in [[routes]] must be true or false, found string",
                "`listen` in [server] must be a string, found integer",
                "`workers` in [server] must be an integer, found string",
            ]
        );
        assert!(raw.upstreams[0].endpoints.is_none());
        assert_eq!(
            raw.routes[0].canary_weight.as_ref().map(|w| w.value),
            Some(5.0)
        );
    }

    #[test]
    fn accepts_inline_arrays_of_tables() {
        let (raw, msgs) = read_str("routes = [{ name = \"a\" }, 3]\n");
        assert_eq!(raw.routes.len(), 1);
        assert_eq!(
            msgs,
            ["`routes` in the top level must contain only tables, found integer"]
        );
    }

    #[test]
    fn spans_point_at_values() {
        let text = "[server]\nlisten = \"1.2.3.4:5\"\n";
        let (raw, _) = read_str(text);
        let at = raw.server.listen.map_or(0, |l| l.at);
        assert_eq!(&text[at..at + 1], "\"");
    }
}
