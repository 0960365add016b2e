//! The route table's index: the first route, in file order, whose `match`
//! holds, found in time that does not grow with the number of routes.
//!
//! Built once per config (a snapshot holds one), answering exactly as
//! [`super::find_route_linear`] does, which stays as the reference and the
//! test oracle:
//!
//! - routes without a host go into one [`PrefixTrie`]; routes with a host
//!   into one trie per host, keyed by the host as [`matcher::host_eq`]
//!   compares it (normalized, ASCII lower-cased);
//! - a request looks in the host-less trie and in its host's trie, and takes
//!   the smaller route index of the two answers.
//!
//! Each trie answers "the smallest route index whose prefix is a prefix of
//! the path" in one walk down the path's bytes: every node knows the smallest
//! index of the routes whose prefix ends at it or above it.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::config::types::Route;

use super::{matcher, RequestView};

/// No route: larger than every route index.
const NONE: usize = usize::MAX;

/// Longest host lower-cased on the stack; longer ones (DNS allows 253
/// bytes, clients send anything) are lower-cased into a heap buffer.
const HOST_BUF: usize = 128;

/// Index of a route table; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct RouteIndex {
    /// Routes without a host.
    any_host: PrefixTrie,
    /// Routes with a host, by normalized ASCII-lower-cased host.
    by_host: HashMap<Box<[u8]>, PrefixTrie>,
    /// How many routes the index was built from.
    len: usize,
}

impl RouteIndex {
    /// Indexes `routes` (in file order). O(total bytes of hosts and prefixes).
    pub fn new(routes: &[Route]) -> RouteIndex {
        let mut any_host = TrieBuilder::default();
        let mut by_host: HashMap<Box<[u8]>, TrieBuilder> = HashMap::new();
        for (i, r) in routes.iter().enumerate() {
            let prefix = r.matcher.path_prefix.as_deref().unwrap_or("").as_bytes();
            match &r.matcher.host {
                None => any_host.insert(prefix, i),
                Some(host) => {
                    let host = matcher::normalize_host(host);
                    // An empty host equals no request host (those are
                    // filtered out as absent): such a route never matches.
                    if !host.is_empty() {
                        let key = host.to_ascii_lowercase().into_bytes().into_boxed_slice();
                        by_host.entry(key).or_default().insert(prefix, i);
                    }
                }
            }
        }
        RouteIndex {
            any_host: any_host.finish(),
            by_host: by_host.into_iter().map(|(h, t)| (h, t.finish())).collect(),
            len: routes.len(),
        }
    }

    /// How many routes the index was built from.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it was built from no routes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The index of the first route whose `match` holds for `req`, if any.
    pub fn find(&self, req: &RequestView) -> Option<usize> {
        let path = req.path.as_bytes();
        let mut best = self.any_host.first_match(path);
        if !self.by_host.is_empty() {
            if let Some(host) = super::request_host(req) {
                let mut buf = [0u8; HOST_BUF];
                let key = lower_ascii(host.as_bytes(), &mut buf);
                if let Some(trie) = self.by_host.get(key.as_ref()) {
                    best = best.min(trie.first_match(path));
                }
            }
        }
        (best != NONE).then_some(best)
    }
}

/// `s` ASCII-lower-cased, borrowed when it has no upper-case letter, in
/// `buf` when it fits.
fn lower_ascii<'a>(s: &'a [u8], buf: &'a mut [u8; HOST_BUF]) -> Cow<'a, [u8]> {
    if !s.iter().any(u8::is_ascii_uppercase) {
        return Cow::Borrowed(s);
    }
    match buf.get_mut(..s.len()) {
        Some(dst) => {
            dst.copy_from_slice(s);
            dst.make_ascii_lowercase();
            Cow::Borrowed(dst)
        }
        None => Cow::Owned(s.to_ascii_lowercase()),
    }
}

/// A radix trie of path prefixes, as built: edges carry byte strings, every
/// prefix ends at a node, and no node has two children starting with the
/// same byte. [`TrieBuilder::finish`] flattens it into a [`PrefixTrie`].
#[derive(Debug, Clone)]
struct TrieBuilder {
    /// `nodes[0]` is the root (the empty prefix).
    nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
struct Node {
    /// The bytes on the edge from the parent (empty for the root).
    label: Box<[u8]>,
    /// The smallest index of the routes whose prefix ends here.
    own: usize,
    /// Children by the first byte of their label, sorted by it.
    children: Vec<(u8, usize)>,
}

impl Node {
    fn new(label: &[u8], own: usize) -> Node {
        Node {
            label: label.into(),
            own,
            children: Vec::new(),
        }
    }
}

impl Default for TrieBuilder {
    fn default() -> Self {
        TrieBuilder {
            nodes: vec![Node::new(b"", NONE)],
        }
    }
}

impl TrieBuilder {
    /// Adds route `route` with prefix `prefix` (the empty prefix matches
    /// every path). Routes are added in file order, so a prefix seen before
    /// keeps its earlier route.
    fn insert(&mut self, prefix: &[u8], route: usize) {
        let mut node = 0;
        let mut rest = prefix;
        while let Some(&b) = rest.first() {
            let slot = self.nodes[node]
                .children
                .binary_search_by_key(&b, |&(c, _)| c);
            let pos = match slot {
                Ok(pos) => pos,
                Err(pos) => {
                    let leaf = self.nodes.len();
                    self.nodes.push(Node::new(rest, route));
                    self.nodes[node].children.insert(pos, (b, leaf));
                    return;
                }
            };
            let child = self.nodes[node].children[pos].1;
            let label = &self.nodes[child].label;
            let common = label.iter().zip(rest).take_while(|(a, b)| a == b).count();
            if common < label.len() {
                // The prefix ends or diverges inside the edge: split it so
                // that a node sits where they part.
                let (head, tail) = label.split_at(common);
                let (head, tail): (Box<[u8]>, Box<[u8]>) = (head.into(), tail.into());
                let mid = self.nodes.len();
                let mut split = Node::new(&head, NONE);
                split.children.push((tail[0], child));
                self.nodes.push(split);
                self.nodes[child].label = tail;
                self.nodes[node].children[pos].1 = mid;
                node = mid;
            } else {
                node = child;
            }
            rest = &rest[common..];
        }
        let n = &mut self.nodes[node];
        n.own = n.own.min(route);
    }

    /// The trie in its lookup form: every node's `first` computed, labels
    /// and children in three flat arrays (node ids unchanged).
    fn finish(self) -> PrefixTrie {
        let mut first = vec![NONE; self.nodes.len()];
        let mut stack = vec![(0, NONE)];
        while let Some((node, above)) = stack.pop() {
            let (Some(n), Some(f)) = (self.nodes.get(node), first.get_mut(node)) else {
                continue;
            };
            *f = n.own.min(above);
            let f = *f;
            stack.extend(n.children.iter().map(|&(_, c)| (c, f)));
        }
        let edges = self.nodes.len().saturating_sub(1);
        let mut t = PrefixTrie {
            nodes: Vec::with_capacity(self.nodes.len()),
            labels: Vec::new(),
            keys: Vec::with_capacity(edges),
            kids: Vec::with_capacity(edges),
        };
        for (n, first) in self.nodes.iter().zip(first) {
            let label = span(t.labels.len(), n.label.len());
            t.labels.extend_from_slice(&n.label);
            let children = span(t.keys.len(), n.children.len());
            for &(b, c) in &n.children {
                t.keys.push(b);
                t.kids.push(u32::try_from(c).unwrap_or(u32::MAX));
            }
            t.nodes.push(Flat {
                first,
                label,
                children,
            });
        }
        t
    }
}

/// `start..start + len` as `u32`s (a config's prefixes are far below 4 GiB;
/// an out-of-range span only fails its `get`).
fn span(start: usize, len: usize) -> (u32, u32) {
    let start = u32::try_from(start).unwrap_or(u32::MAX);
    let end = u32::try_from(len).map_or(u32::MAX, |l| start.saturating_add(l));
    (start, end)
}

/// A [`TrieBuilder`] flattened for lookups: a node is 24 bytes, its label
/// and its children's first bytes sit in shared arrays, so one step down
/// reads a few adjacent bytes instead of chasing three heap pointers.
#[derive(Debug, Clone)]
struct PrefixTrie {
    /// `nodes[0]` is the root.
    nodes: Vec<Flat>,
    /// Every edge label, concatenated.
    labels: Vec<u8>,
    /// The first byte of each node's children's labels, sorted per node.
    keys: Vec<u8>,
    /// The children's node ids, parallel to `keys`.
    kids: Vec<u32>,
}

#[derive(Debug, Clone, Copy)]
struct Flat {
    /// The smallest route index whose prefix ends here or above: the
    /// answer for a path whose walk ends at this node.
    first: usize,
    /// The edge label's range in `labels`.
    label: (u32, u32),
    /// The children's range in `keys` and `kids`.
    children: (u32, u32),
}

impl Default for PrefixTrie {
    fn default() -> Self {
        TrieBuilder::default().finish()
    }
}

/// Children at most this many are searched by a scan (cheaper than a
/// binary search over a few bytes).
const SCAN: usize = 16;

impl PrefixTrie {
    /// The smallest route index whose prefix is a prefix of `path`, or
    /// [`NONE`]. One step per edge on the way down; an edge that the path
    /// leaves part-way ends the walk, as no prefix ends inside an edge.
    fn first_match(&self, path: &[u8]) -> usize {
        let Some(mut node) = self.nodes.first() else {
            return NONE;
        };
        let mut best = node.first;
        let mut rest = path;
        while let Some(&b) = rest.first() {
            let (from, to) = (node.children.0 as usize, node.children.1 as usize);
            let Some(keys) = self.keys.get(from..to) else {
                break;
            };
            let pos = if keys.len() <= SCAN {
                keys.iter().position(|&k| k == b)
            } else {
                keys.binary_search(&b).ok()
            };
            let Some(child) = pos
                .and_then(|i| self.kids.get(from + i))
                .and_then(|&c| self.nodes.get(c as usize))
            else {
                break;
            };
            let (from, to) = (child.label.0 as usize, child.label.1 as usize);
            let Some(after) = self.labels.get(from..to).and_then(|l| rest.strip_prefix(l)) else {
                break;
            };
            node = child;
            best = child.first;
            rest = after;
        }
        best
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::config::types::{RouteMatch, UpstreamId};
    use crate::domain::{CanaryWeight, RouteName};
    use proptest::prelude::*;

    fn route(host: Option<&str>, prefix: Option<&str>) -> Route {
        Route {
            name: RouteName::new("r"),
            matcher: RouteMatch {
                host: host.map(str::to_owned),
                path_prefix: prefix.map(str::to_owned),
            },
            stable: UpstreamId(0),
            canary: UpstreamId(1),
            canary_weight: CanaryWeight::ZERO,
            sticky: None,
            salt: "r".into(),
            fallback: true,
            fallback_budget: 0.2,
            rules: Vec::new(),
            ramp: None,
            shadow: None,
            grpc_error_codes: Default::default(),
            grpc_idempotent: Vec::new(),
        }
    }

    /// Both answers for one request.
    fn both(
        routes: &[Route],
        index: &RouteIndex,
        host: Option<&str>,
        path: &str,
    ) -> (Option<usize>, Option<usize>) {
        let headers = http::HeaderMap::new();
        let req = RequestView {
            host,
            path,
            query: None,
            headers: &headers,
        };
        (
            index.find(&req),
            super::super::find_route_linear(routes, &req),
        )
    }

    /// Hosts that collide under the matching rules (case, port, brackets,
    /// trailing dot, userinfo, non-ASCII), and random ones.
    fn host() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "shop.example",
                "Shop.Example",
                "shop.example.",
                "SHOP.EXAMPLE:8080",
                "shop.example.:443",
                "[::1]",
                "::1",
                "[::1]:80",
                "u@shop.example",
                "other.example",
                "",
                ":",
                " shop.example ",
                "M\u{fc}ller.example",
                "m\u{fc}ller.example",
                "M\u{dc}LLER.example",
            ])
            .prop_map(str::to_owned),
            "[aAbB.:\\[\\]@ ]{0,6}",
        ]
    }

    /// Prefixes and paths over a small alphabet, so they often share bytes.
    fn path() -> impl Strategy<Value = String> {
        "[/aAb\u{fc}]{0,7}"
    }

    proptest! {
        /// The index answers what trying every route in file order answers.
        #[test]
        fn index_agrees_with_the_linear_scan(
            table in proptest::collection::vec(
                (proptest::option::of(host()), proptest::option::of(path())),
                0..40,
            ),
            requests in proptest::collection::vec((proptest::option::of(host()), path()), 1..20),
        ) {
            let routes: Vec<Route> = table.iter().map(|(h, p)| route(h.as_deref(), p.as_deref())).collect();
            let index = RouteIndex::new(&routes);
            prop_assert_eq!(index.len(), routes.len());
            for (h, p) in &requests {
                let (got, want) = both(&routes, &index, h.as_deref(), p);
                prop_assert_eq!(got, want, "host {:?} path {:?}", h, p);
            }
        }
    }

    /// The shape of the route-scaling bench: prefix routes mixed with host
    /// routes, 10,000 of them; every route is reachable and wins for its
    /// own request, as the linear scan says.
    #[test]
    fn ten_thousand_routes_agree_with_the_linear_scan() {
        let routes: Vec<Route> = (0..10_000)
            .map(|i| {
                if i % 2 == 0 {
                    route(None, Some(&format!("/svc/{i}/")))
                } else {
                    route(Some(&format!("h{i}.example")), Some("/api"))
                }
            })
            .collect();
        let index = RouteIndex::new(&routes);
        for i in (0..10_000).step_by(7).chain([9_998, 9_999]) {
            let (host, path) = if i % 2 == 0 {
                ("any.example".to_owned(), format!("/svc/{i}/x"))
            } else {
                (format!("H{i}.Example:80"), "/api/x".to_owned())
            };
            assert_eq!(
                both(&routes, &index, Some(&host), &path),
                (Some(i), Some(i))
            );
        }
        assert_eq!(
            both(&routes, &index, Some("h1.example"), "/nope"),
            (None, None)
        );
        assert_eq!(both(&routes, &index, None, "/api"), (None, None));
    }

    fn trie(prefixes: &[&str]) -> PrefixTrie {
        let mut t = TrieBuilder::default();
        for (i, p) in prefixes.iter().enumerate() {
            t.insert(p.as_bytes(), i);
        }
        t.finish()
    }

    fn answer(t: &PrefixTrie, path: &str) -> Option<usize> {
        let f = t.first_match(path.as_bytes());
        (f != NONE).then_some(f)
    }

    #[test]
    fn first_in_order_among_matching_prefixes() {
        let t = trie(&[
            "/api/recommend",
            "/api",
            "/api/recommend/x",
            "/b",
            "",
            "/api",
        ]);
        assert_eq!(answer(&t, "/api/recommend/x/y"), Some(0));
        assert_eq!(answer(&t, "/api/recommendations"), Some(0));
        assert_eq!(answer(&t, "/api/other"), Some(1));
        assert_eq!(answer(&t, "/ap"), Some(4));
        assert_eq!(answer(&t, ""), Some(4));
        assert_eq!(answer(&t, "/bb"), Some(3));
        let t = trie(&["/a/b/c", "/a/b", "/a/x", "/a"]);
        assert_eq!(answer(&t, "/a/b/c"), Some(0));
        assert_eq!(answer(&t, "/a/b/"), Some(1));
        assert_eq!(answer(&t, "/a/xy"), Some(2));
        assert_eq!(answer(&t, "/a/"), Some(3));
        assert_eq!(answer(&t, "/"), None);
        assert_eq!(answer(&t, ""), None);
        assert_eq!(answer(&PrefixTrie::default(), "/"), None);
    }

    #[test]
    fn split_edges_keep_both_sides() {
        // "/abc" first, then "/abd" splits its edge at "/ab", then "/a" at "/a".
        let t = trie(&["/abc", "/abd", "/a"]);
        assert_eq!(answer(&t, "/abc"), Some(0));
        assert_eq!(answer(&t, "/abd"), Some(1));
        assert_eq!(answer(&t, "/abe"), Some(2));
        assert_eq!(answer(&t, "/ab"), Some(2));
        assert_eq!(answer(&t, "/b"), None);
    }

    #[test]
    fn hosts_are_lower_cased_without_allocating_when_short() {
        let mut buf = [0u8; HOST_BUF];
        assert!(matches!(
            lower_ascii(b"shop", &mut buf),
            Cow::Borrowed(b"shop")
        ));
        assert_eq!(
            lower_ascii(b"Shop.\xc3\x9c", &mut buf).as_ref(),
            b"shop.\xc3\x9c"
        );
        let long = "A".repeat(HOST_BUF + 1);
        let lowered = lower_ascii(long.as_bytes(), &mut buf);
        assert_eq!(lowered.as_ref(), "a".repeat(HOST_BUF + 1).as_bytes());
    }
}
