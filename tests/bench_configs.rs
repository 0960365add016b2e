//! The benchmarks' grayproxy configs (`benches/e2e/*.toml.in`) stay valid
//! as the config language changes: a benchmark that fails at start-up on a
//! renamed key measures nothing.
#![allow(clippy::expect_used)]

use std::path::Path;

#[test]
fn every_benchmark_config_template_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/e2e");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("benches/e2e is readable") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.ends_with(".toml.in") {
            continue;
        }
        let template = std::fs::read_to_string(&path).expect("the template is readable");
        let text = template
            .replace("@PORT_GRAY@", "28283")
            .replace("@PORT_ADMIN@", "28284")
            .replace("@PORT_STABLE@", "28280")
            .replace("@PORT_CANARY@", "28281")
            .replace("@DIR@", "/tmp/grayproxy-bench");
        assert!(!text.contains('@'), "{name}: a placeholder is not filled");
        if let Err(errors) = grayproxy::config::parse(&text, &path) {
            panic!("{name} is not a valid config:\n{errors}");
        }
        checked.push(name.to_owned());
    }
    checked.sort();
    assert_eq!(checked, ["grayproxy-plain.toml.in", "grayproxy.toml.in"]);
}
