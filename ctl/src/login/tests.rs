//! Where a login writes, which context it saves and which coordinator it
//! asks; how its failures exit.

use std::collections::BTreeMap;

use drover_client::enroll::CaPin;

use super::*;
use crate::context::Context;

fn args(name: &str) -> LoginArgs {
    LoginArgs {
        name: name.into(),
        token: "djt_1_secret".into(),
        ca_pin: CaPin::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap(),
        coordinator: None,
        tls_dir: None,
        context: None,
    }
}

fn config(current: Option<&str>) -> Config {
    let ctx = |url: &str| Context { coordinator: url.into(), tls_dir: "/home/a/admin".into() };
    Config {
        current_context: current.map(str::to_string),
        contexts: BTreeMap::from([("prod".into(), ctx("https://prod:7700")), ("dev".into(), ctx("https://dev:7700"))]),
    }
}

const HOME: &str = "/home/a/.config/drover";

fn plan_of(args: &LoginArgs, before: &RemoteBefore, config: &Config) -> Result<Plan, Exit> {
    plan(args, before, config, Some(Path::new(HOME)))
}

#[test]
fn by_default_the_bundle_goes_beside_the_contexts_and_a_context_named_after_the_user_is_saved() {
    let none = RemoteBefore::default();
    let got = plan_of(&args("otto"), &none, &Config::default()).unwrap();
    let want = Plan {
        urls: DEFAULT_COORDINATOR.into(),
        tls_dir: PathBuf::from(HOME).join("tls").join("otto"),
        context: Some("otto".into()),
    };
    assert_eq!(got, want);
    // The current context's coordinator, when nothing else names one.
    assert_eq!(plan_of(&args("otto"), &none, &config(Some("dev"))).unwrap().urls, "https://dev:7700");
}

#[test]
fn an_explicit_directory_saves_no_context_unless_one_is_named() {
    let none = RemoteBefore::default();
    let dir = LoginArgs { tls_dir: Some("rel/otto".into()), ..args("otto") };
    let got = plan_of(&dir, &none, &Config::default()).unwrap();
    assert_eq!(got.context, None);
    assert_eq!(got.tls_dir, std::env::current_dir().unwrap().join("rel/otto"), "made absolute");
    let named = LoginArgs { context: Some("ci".into()), ..dir };
    assert_eq!(plan_of(&named, &none, &Config::default()).unwrap().context.as_deref(), Some("ci"));
    // Without a home, an explicit directory and no context still work.
    let home_less = plan(&LoginArgs { context: None, ..named }, &none, &Config::default(), None).unwrap();
    assert_eq!(home_less.context, None);
    let err = plan(&args("otto"), &none, &Config::default(), None).unwrap_err();
    assert!(err.message.contains("give --tls-dir DIR"), "{}", err.message);
}

#[test]
fn the_coordinator_is_found_as_every_command_finds_it() {
    let cfg = config(Some("dev"));
    let none = RemoteBefore::default();
    // An existing context named by --context gives its coordinator.
    let prod = LoginArgs { context: Some("prod".into()), ..args("otto") };
    assert_eq!(plan_of(&prod, &none, &cfg).unwrap().urls, "https://prod:7700");
    // A new one does not exist yet: the current context's.
    let new = LoginArgs { context: Some("mine".into()), ..args("otto") };
    assert_eq!(plan_of(&new, &none, &cfg).unwrap().urls, "https://dev:7700");
    // DROVER_CONTEXT (or --context before the command) must exist.
    let env_ctx = RemoteBefore { context: Some("prod".into()), ..Default::default() };
    assert_eq!(plan_of(&args("otto"), &env_ctx, &cfg).unwrap().urls, "https://prod:7700");
    let missing = RemoteBefore { context: Some("gone".into()), ..Default::default() };
    assert_eq!(plan_of(&args("otto"), &missing, &cfg).unwrap_err().code, EXIT_NOT_FOUND);
    // DROVER_COORDINATOR, then --coordinator, win over contexts.
    let env = RemoteBefore { coordinator: Some("https://env:7700".into()), ..missing };
    assert_eq!(plan_of(&prod, &env, &cfg).unwrap().urls, "https://env:7700");
    let flag = LoginArgs { coordinator: Some("https://a:1,https://b:1".into()), ..prod };
    assert_eq!(plan_of(&flag, &env, &cfg).unwrap().urls, "https://a:1,https://b:1");
    // DROVER_TLS_DIR is never where a login writes.
    let tls = RemoteBefore { tls_dir: Some("/home/a/admin".into()), ..Default::default() };
    assert_eq!(plan_of(&args("otto"), &tls, &cfg).unwrap().tls_dir, PathBuf::from(HOME).join("tls/otto"));
}

#[test]
fn bad_names_and_an_admin_directory_are_refused_before_the_token_is_spent() {
    let none = RemoteBefore::default();
    for name in ["", "../x", "a/b", "-x", "a b"] {
        let err = plan_of(&args(name), &none, &Config::default()).unwrap_err();
        assert_eq!(err.code, EXIT_INVALID, "{name:?}");
        assert!(err.message.starts_with(&format!("invalid user name {name:?}")), "{}", err.message);
    }
    let bad_context = LoginArgs { context: Some("my ctx".into()), ..args("otto") };
    let err = plan_of(&bad_context, &none, &Config::default()).unwrap_err();
    assert!(err.message.contains("is not a context name"), "{}", err.message);
    let dir = std::env::temp_dir().join(format!("drover-login-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("admin.pem"), "").unwrap();
    let admin = LoginArgs { tls_dir: Some(dir.clone()), ..args("otto") };
    let err = plan_of(&admin, &none, &Config::default()).unwrap_err();
    assert_eq!(err.code, EXIT_INVALID);
    assert!(err.message.starts_with(&format!("{} holds admin.pem", dir.display())), "{}", err.message);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_refusal_exits_as_the_same_refusal_of_any_call() {
    let refused = |code: tonic::Code| EnrollError::Refused {
        url: "https://c:1".into(),
        code,
        message: "join token 7f3a9c2b was already used\x1b[2J".into(),
    };
    let exit = enroll_exit(refused(tonic::Code::PermissionDenied));
    assert_eq!(exit.code, EXIT_PERMISSION);
    assert_eq!(
        exit.message,
        "https://c:1 refused the enrollment (PermissionDenied): join token 7f3a9c2b was already used^[[2J"
    );
    assert_eq!(enroll_exit(refused(tonic::Code::InvalidArgument)).code, EXIT_INVALID);
    assert_eq!(enroll_exit(refused(tonic::Code::Unimplemented)).code, EXIT_UNREACHABLE);
    let pin = CaPin::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap();
    let mismatch = EnrollError::PinMismatch { url: "https://c:1".into(), pin, holder: Holder::User };
    let exit = enroll_exit(mismatch);
    assert_eq!(exit.code, EXIT_INVALID);
    assert!(exit.message.ends_with("check the pin printed by `drover user add`"), "{}", exit.message);
    let gave_up = EnrollError::GaveUp { waited: enroll::PATIENCE, last: "down".into(), holder: Holder::User };
    let exit = enroll_exit(gave_up);
    assert_eq!(
        (exit.code, exit.message.as_str()),
        (EXIT_UNREACHABLE, "no coordinator enrolled the user within 60s; the last error: down")
    );
}
