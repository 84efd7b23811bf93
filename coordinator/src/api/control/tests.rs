//! Table tests of the control edge: how a submit request becomes the
//! source submit is given.

use super::*;
use pb::submit_run_request::Source as S;

#[test]
fn a_submit_request_becomes_a_source_with_empty_fields_left_to_the_defaults() {
    let inline = |file_name: &str| S::Inline(pb::InlinePipeline { file_name: file_name.into(), yaml: "y".into() });
    let git = |repo: &str, r#ref: &str, file: &str| {
        S::Git(pb::GitSource { repo: repo.into(), r#ref: r#ref.into(), file: file.into() })
    };
    let some = |s: &str| Some(s.to_string());
    // (case, request's source, what submit is given)
    let cases = [
        ("inline without a name", inline(""), SubmitSource::Inline { file: None, yaml: "y".into() }),
        ("inline with a name", inline("a.yml"), SubmitSource::Inline { file: some("a.yml"), yaml: "y".into() }),
        ("git, defaults", git("r", "", ""), SubmitSource::Git { repo: "r".into(), reference: None, file: None }),
        (
            "git, all given",
            git("r", "main", "ci.yml"),
            SubmitSource::Git { repo: "r".into(), reference: some("main"), file: some("ci.yml") },
        ),
        // Left for submit to refuse, as the web UI's requests will be.
        ("git, no repo", git("", "", ""), SubmitSource::Git { repo: "".into(), reference: None, file: None }),
    ];
    for (case, source, want) in cases {
        let got = submit_source(pb::SubmitRunRequest { source: Some(source), ..Default::default() }).unwrap();
        assert_eq!(got, want, "{case}");
    }
    let none = Status::from(submit_source(pb::SubmitRunRequest { source: None, ..Default::default() }).unwrap_err());
    assert_eq!((none.code(), none.message()), (tonic::Code::InvalidArgument, "no pipeline given"));
}
