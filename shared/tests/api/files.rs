//! Files: safe paths, size limits, hashes, deduplication, binary round trips.

use crate::helpers::TestApp;

#[tokio::test]
async fn binary_file_round_trips_byte_exact_with_etag() {
    let app = TestApp::new().await;
    let (t, _, _) = app.signup("ada@example.com").await;
    let p = app.project(&t, "p").await;
    let data: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let put = app
        .request(
            "PUT",
            &format!("/v1/projects/{p}/files/img/logo.png"),
            Some(&t),
            None,
            data.clone(),
        )
        .await;
    assert_eq!(put.status, 201);
    let sha = put.json()["sha256"].as_str().expect("sha").to_owned();
    let get = app
        .get(&format!("/v1/projects/{p}/files/img/logo.png"), Some(&t))
        .await;
    assert_eq!(get.body.as_ref(), data.as_slice());
    assert_eq!(get.headers["content-type"], "image/png");
    assert_eq!(
        get.headers["etag"].to_str().ok(),
        Some(format!("\"{sha}\"").as_str())
    );
    let again = app
        .request(
            "PUT",
            &format!("/v1/projects/{p}/files/img/logo.png"),
            Some(&t),
            None,
            data,
        )
        .await;
    assert_eq!(again.status, 200, "replacing answers 200");
}

#[tokio::test]
async fn identical_content_is_stored_once() {
    let app = TestApp::new().await;
    let (t, _, _) = app.signup("ada@example.com").await;
    let p = app.project(&t, "p").await;
    for path in ["a.txt", "b/c.txt", "d.txt"] {
        app.request(
            "PUT",
            &format!("/v1/projects/{p}/files/{path}"),
            Some(&t),
            None,
            "same bytes",
        )
        .await;
    }
    assert_eq!(app.count("files").await, 3);
    assert_eq!(app.count("blobs").await, 1);
    app.request(
        "DELETE",
        &format!("/v1/projects/{p}/files/a.txt"),
        Some(&t),
        None,
        "",
    )
    .await;
    app.request(
        "DELETE",
        &format!("/v1/projects/{p}/files/b/c.txt"),
        Some(&t),
        None,
        "",
    )
    .await;
    assert_eq!(app.count("blobs").await, 1, "still used by d.txt");
    app.request(
        "DELETE",
        &format!("/v1/projects/{p}/files/d.txt"),
        Some(&t),
        None,
        "",
    )
    .await;
    assert_eq!(app.count("blobs").await, 0);
}

#[tokio::test]
async fn unsafe_paths_are_refused_and_nothing_is_written() {
    let app = TestApp::new().await;
    let (t, _, _) = app.signup("ada@example.com").await;
    let p = app.project(&t, "p").await;
    let deep = vec!["d"; 33].join("/");
    let long = "x".repeat(513);
    for bad in [
        "..%2Fescape",
        "%2e%2e/x",
        "a/%2e%2e/b",
        "%2Fetc%2Fpasswd",
        "a%5Cb",
        "a%00b",
        "a//b",
        "a/./b",
        "./a",
        deep.as_str(),
        long.as_str(),
        "%ff%fe",
        "a/",
    ] {
        let r = app
            .request(
                "PUT",
                &format!("/v1/projects/{p}/files/{bad}"),
                Some(&t),
                None,
                "x",
            )
            .await;
        r.problem(400, "invalid_path");
        app.get(&format!("/v1/projects/{p}/files/{bad}"), Some(&t))
            .await
            .problem(400, "invalid_path");
    }
    assert_eq!(app.count("files").await, 0);
}

#[tokio::test]
async fn oversize_file_is_413_and_the_old_content_survives() {
    let app =
        TestApp::with_vars(&[("MAX_FILE_BYTES", "1000"), ("MAX_PROJECT_BYTES", "2000")]).await;
    let (t, _, _) = app.signup("ada@example.com").await;
    let p = app.project(&t, "p").await;
    app.request(
        "PUT",
        &format!("/v1/projects/{p}/files/a.txt"),
        Some(&t),
        None,
        "original",
    )
    .await;
    app.request(
        "PUT",
        &format!("/v1/projects/{p}/files/a.txt"),
        Some(&t),
        None,
        vec![b'x'; 1001],
    )
    .await
    .problem(413, "file_too_large");
    assert_eq!(
        app.get(&format!("/v1/projects/{p}/files/a.txt"), Some(&t))
            .await
            .body,
        "original"
    );
    app.request(
        "PUT",
        &format!("/v1/projects/{p}/files/b.txt"),
        Some(&t),
        None,
        vec![b'b'; 1000],
    )
    .await;
    app.request(
        "PUT",
        &format!("/v1/projects/{p}/files/c.txt"),
        Some(&t),
        None,
        vec![b'c'; 1000],
    )
    .await
    .problem(413, "project_too_large");
    // Replacing a file counts only the difference.
    assert_eq!(
        app.request(
            "PUT",
            &format!("/v1/projects/{p}/files/b.txt"),
            Some(&t),
            None,
            vec![b'd'; 1000]
        )
        .await
        .status,
        200
    );
    let project = app.get(&format!("/v1/projects/{p}"), Some(&t)).await.json();
    assert_eq!(project["total_bytes"], 1008);
    assert_eq!(app.count("files").await, 2);
}

#[tokio::test]
async fn missing_file_is_404_and_delete_is_not_repeatable() {
    let app = TestApp::new().await;
    let (t, _, _) = app.signup("ada@example.com").await;
    let p = app.project(&t, "p").await;
    app.get(&format!("/v1/projects/{p}/files/nope.txt"), Some(&t))
        .await
        .problem(404, "not_found");
    app.request(
        "PUT",
        &format!("/v1/projects/{p}/files/x.txt"),
        Some(&t),
        None,
        "x",
    )
    .await;
    assert_eq!(
        app.request(
            "DELETE",
            &format!("/v1/projects/{p}/files/x.txt"),
            Some(&t),
            None,
            ""
        )
        .await
        .status,
        204
    );
    app.request(
        "DELETE",
        &format!("/v1/projects/{p}/files/x.txt"),
        Some(&t),
        None,
        "",
    )
    .await
    .problem(404, "not_found");
}

#[tokio::test]
async fn every_file_change_is_audited() {
    let app = TestApp::new().await;
    let (t, _, _) = app.signup("ada@example.com").await;
    let p = app.project(&t, "p").await;
    app.request(
        "PUT",
        &format!("/v1/projects/{p}/files/x.txt"),
        Some(&t),
        None,
        "x",
    )
    .await;
    app.request(
        "DELETE",
        &format!("/v1/projects/{p}/files/x.txt"),
        Some(&t),
        None,
        "",
    )
    .await;
    let rows = app
        .ports
        .sql
        .query(
            "SELECT action FROM audit_events WHERE target = $1 ORDER BY id",
            &[p.as_str().into()],
        )
        .await
        .expect("audit");
    let actions: Vec<String> = rows
        .iter()
        .map(|r| r.text("action").expect("action"))
        .collect();
    assert_eq!(actions, ["project.create", "file.write", "file.delete"]);
}

/// A tier's file limit below the server's is enforced too (read with the
/// project's lock), and the refused write changes nothing.
#[tokio::test]
async fn a_tiers_lower_file_limit_is_enforced() {
    let app = TestApp::new().await;
    let (t, _, id) = app.signup("ada@example.com").await;
    let p = app.project(&t, "p").await;
    app.ports
        .sql
        .execute(
            "UPDATE users SET limits_override = '{\"max_file_bytes\": 100}'::jsonb WHERE id = $1",
            &[id.as_str().into()],
        )
        .await
        .expect("limits");
    let path = format!("/v1/projects/{p}/files/a.txt");
    let put = |body: Vec<u8>| app.request("PUT", &path, Some(&t), None, body);
    assert_eq!(put(vec![b'x'; 100]).await.status, 201);
    let refused = put(vec![b'y'; 101]).await.problem(413, "file_too_large");
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.contains("at most 100 bytes")),
        "{refused}"
    );
    let file = app
        .get(&format!("/v1/projects/{p}/files/a.txt"), Some(&t))
        .await;
    assert_eq!(file.body, vec![b'x'; 100]);
}

/// A content row is shared by the owner's files with the same hash and is
/// collected once none names it. A collection racing a write that reuses
/// the content (the write's file not yet committed when the collection
/// looked) must never take the written file with it: it fails instead, and
/// deletes nothing.
#[tokio::test]
async fn collecting_content_never_deletes_a_file_written_meanwhile() {
    use sha2::{Digest, Sha256};
    let app = TestApp::new().await;
    let (t, _, user) = app.signup("ada@example.com").await;
    let a = app.project(&t, "a").await;
    let b = app.project(&t, "b").await;
    let put = app
        .request(
            "PUT",
            &format!("/v1/projects/{a}/files/x.txt"),
            Some(&t),
            None,
            "same",
        )
        .await;
    assert_eq!(put.status, 201);
    let sha: String = Sha256::digest(b"same")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let writer = app.on_own_connection().await;
    let collector = app.on_own_connection().await;
    let (w, c) = (writer.ports.sql.as_ref(), collector.ports.sql.as_ref());
    // The write reuses the content: its file is in, not committed.
    w.batch("BEGIN").await.expect("begin");
    w.execute(
        "INSERT INTO files (project_id, path, owner_id, sha256, size) VALUES ($1, 'y.txt', $2, $3, 4)",
        &[b.as_str().into(), user.as_str().into(), sha.as_str().into()],
    )
    .await
    .expect("the written file");
    // The other project's file goes, and its content is collected: the
    // collection waits for the write, which commits meanwhile.
    c.batch("BEGIN").await.expect("begin");
    c.execute(
        "DELETE FROM files WHERE project_id = $1 AND path = 'x.txt'",
        &[a.as_str().into()],
    )
    .await
    .expect("delete");
    let (collected, committed) = futures_util::future::join(
        c.execute(
            "DELETE FROM blobs b WHERE b.owner_id = $1 AND b.sha256 = $2
             AND NOT EXISTS (SELECT 1 FROM files f WHERE f.owner_id = $1 AND f.sha256 = $2)",
            &[user.as_str().into(), sha.as_str().into()],
        ),
        async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            w.batch("COMMIT").await
        },
    )
    .await;
    committed.expect("the write commits");
    assert!(collected.is_err(), "the racing collection is refused");
    c.batch("ROLLBACK").await.expect("rollback");
    let y = app
        .get(&format!("/v1/projects/{b}/files/y.txt"), Some(&t))
        .await;
    assert_eq!((y.status, &y.body[..]), (200, &b"same"[..]));
    let x = app
        .get(&format!("/v1/projects/{a}/files/x.txt"), Some(&t))
        .await;
    assert_eq!(
        (x.status, &x.body[..]),
        (200, &b"same"[..]),
        "the failed delete changed nothing"
    );
}

/// A project's files are a tree: a name is a file or a folder, never both
/// (a Git tree, a sandbox's disk and the preview could not hold it). A
/// write that would make one both is 409 and writes nothing.
#[tokio::test]
async fn a_path_is_a_file_or_a_folder_never_both() {
    let app = TestApp::new().await;
    let (t, _, _) = app.signup("ada@example.com").await;
    let p = app.project(&t, "tree").await;
    let put = |path: &'static str| {
        let (app, t, p) = (&app, &t, &p);
        async move {
            app.request(
                "PUT",
                &format!("/v1/projects/{p}/files/{path}"),
                Some(t),
                None,
                "x",
            )
            .await
        }
    };
    assert_eq!(put("a").await.status, 201);
    assert_eq!(put("dir/x/y.txt").await.status, 201);
    let before = app.count("files").await;
    put("a/b.txt").await.problem(409, "path_conflict");
    put("dir/x").await.problem(409, "path_conflict");
    put("dir").await.problem(409, "path_conflict");
    put("dir/x/y.txt/z").await.problem(409, "path_conflict");
    assert_eq!(app.count("files").await, before, "nothing written");
    // Names that only share a prefix are not a folder of each other.
    assert_eq!(put("ab/c").await.status, 201);
    assert_eq!(put("dir/x2").await.status, 201);
    assert_eq!(put("dir/x/z.txt").await.status, 201);
    // Writing a file again is not a clash with itself.
    assert_eq!(put("a").await.status, 200);
}
