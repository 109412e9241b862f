use std::path::Path;

use super::*;
use crate::builder::def;

fn def_of(extra: &str) -> ImageDef {
    def::parse(
        &format!("[image]\nname = \"a\"\n{extra}"),
        Path::new("drover.toml"),
    )
    .unwrap()
}

fn current(text: &str) -> Current {
    Current {
        text: text.into(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        from: "base layer sha256:ab".into(),
    }
}

fn debian() -> Databases {
    Databases {
        passwd: Some(current(
            "root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n",
        )),
        group: Some(current("root:x:0:\nwww-data:x:33:\nadm:x:4:\n")),
        shadow: None,
        gshadow: None,
    }
}

fn text_of(w: &Written, path: &str) -> String {
    w.iter().find(|f| f.0 == path).unwrap().1.clone()
}

#[test]
fn accounts_are_appended_to_the_images_files_which_are_kept_as_they_are() {
    let d = def_of(
        "[[account]]\nname = \"app\"\nuid = 10001\ngroups = [\"adm\", \"web\"]\n\
         [[account]]\nname = \"web\"\nuid = 10002\nhome = \"/nonexistent\"\nshell = \"/bin/sh\"\n",
    );
    let w = merge(&d.accounts, &debian()).unwrap();
    assert_eq!(
        text_of(&w, "/etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\n\
         www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n\
         app:x:10001:10001::/home/app:/usr/sbin/nologin\n\
         web:x:10002:10002::/nonexistent:/bin/sh\n"
    );
    assert_eq!(
        text_of(&w, "/etc/group"),
        "root:x:0:\nwww-data:x:33:\nadm:x:4:app\napp:x:10001:\nweb:x:10002:app\n"
    );
    // No shadow files unless the image has them.
    assert_eq!(w.len(), 2);
    // Same input, same bytes.
    assert_eq!(merge(&d.accounts, &debian()).unwrap(), w);
}

#[test]
fn an_image_without_account_files_gets_new_ones() {
    let d = def_of("[[account]]\nname = \"app\"\nuid = 10001\ngid = 20000\ngroup = \"staff\"\n");
    let w = merge(&d.accounts, &Databases::default()).unwrap();
    assert_eq!(
        w,
        vec![
            (
                "/etc/passwd",
                "app:x:10001:20000::/home/app:/usr/sbin/nologin\n".to_string(),
                0o644,
                0,
                0
            ),
            ("/etc/group", "staff:x:20000:\n".to_string(), 0o644, 0, 0),
        ]
    );
}

#[test]
fn shadow_files_the_image_has_get_locked_entries() {
    let mut dbs = debian();
    dbs.shadow = Some(Current {
        mode: 0o640,
        gid: 42,
        ..current("root:*:19000:0:99999:7:::\n")
    });
    dbs.gshadow = Some(current("root:*::\nadm:*::\n"));
    let d = def_of("[[account]]\nname = \"app\"\nuid = 10001\ngroups = [\"adm\"]\n");
    let w = merge(&d.accounts, &dbs).unwrap();
    let shadow = w.iter().find(|f| f.0 == "/etc/shadow").unwrap();
    assert_eq!(shadow.1, "root:*:19000:0:99999:7:::\napp:!:::::::\n");
    assert_eq!((shadow.2, shadow.4), (0o640, 42), "mode and owner kept");
    assert_eq!(
        text_of(&w, "/etc/gshadow"),
        "root:*::\nadm:*::app\napp:!::\n"
    );
}

#[test]
fn an_account_the_image_has_with_the_same_ids_is_left_alone() {
    let d = def_of("[[account]]\nname = \"www-data\"\nuid = 33\nhome = \"/nonexistent\"\n");
    let w = merge(&d.accounts, &debian()).unwrap();
    assert_eq!(
        text_of(&w, "/etc/passwd"),
        debian().passwd.unwrap().text,
        "unchanged"
    );
}

#[test]
fn clashes_with_the_image_name_the_account_the_file_and_the_layer() {
    for (accounts, key, want) in [
        (
            "name = \"www-data\"\nuid = 34",
            "uid",
            "user \"www-data\" is uid 33 in the image's /etc/passwd (from base layer sha256:ab), not 34",
        ),
        (
            "name = \"www-data\"\nuid = 33\ngid = 1",
            "gid",
            "user \"www-data\" has gid 33",
        ),
        (
            "name = \"app\"\nuid = 33",
            "uid",
            "uid 33 is user \"www-data\"'s in the image's /etc/passwd",
        ),
        (
            "name = \"app\"\nuid = 1000\ngid = 4",
            "gid",
            "gid 4 is group \"adm\"'s in the image's /etc/group (from base layer sha256:ab) (name it: group = \"adm\")",
        ),
        (
            "name = \"app\"\nuid = 1000\ngroup = \"adm\"",
            "group",
            "group \"adm\" is gid 4",
        ),
        (
            "name = \"app\"\nuid = 1000\ngroups = [\"wheel\"]",
            "groups",
            "no group \"wheel\" in the image's /etc/group",
        ),
    ] {
        let d = def_of(&format!("[[account]]\n{accounts}\n"));
        let c = merge(&d.accounts, &debian()).unwrap_err();
        assert_eq!((c.account, c.key), (0, key), "{accounts}");
        assert!(c.message.contains(want), "{accounts}: {}", c.message);
        // Located: the definition, the account and its key.
        let e = entries(&d, &Merger::default(), &debian())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("drover.toml") && e.contains(&format!("account[0].{key}")),
            "{e}"
        );
    }
}

fn record(path: &str, kind: FileKind, mode: u32, link: Option<&str>) -> FileRecord {
    FileRecord {
        path: path.into(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        size: 0,
        sha256: None,
        link: link.map(str::to_string),
        xattrs: Default::default(),
    }
}

#[test]
fn homes_and_mount_points_are_directories_keeping_what_the_image_has() {
    let d = def_of(
        "[[account]]\nname = \"app\"\nuid = 10001\n\
         [config]\ntmpfs = [\"/var/lib/nginx\", \"/run/nginx\", \"/home/app\"]\n",
    );
    let mut files = Merger::default();
    files.put(record("/etc", FileKind::Dir, 0o750, None));
    files.put(record("/var", FileKind::Dir, 0o711, None));
    let e = entries(&d, &files, &Databases::default()).unwrap();
    let got: Vec<(String, u32, u32)> = e.iter().map(|e| (e.path.clone(), e.mode, e.uid)).collect();
    assert_eq!(
        got,
        [
            ("etc".into(), 0o750, 0),
            ("etc/group".into(), 0o644, 0),
            ("etc/passwd".into(), 0o644, 0),
            ("home".into(), 0o755, 0),
            // The home is the account's, even where it is a mount point too.
            ("home/app".into(), 0o755, 10001),
            ("var".into(), 0o711, 0),
            ("var/lib".into(), 0o755, 0),
            ("var/lib/nginx".into(), 0o755, 0),
        ]
    );
    // Same input, same entries (the layer's bytes follow from them).
    let again = entries(&d, &files, &Databases::default()).unwrap();
    assert_eq!(
        again
            .iter()
            .map(|e| (&e.path, e.sha256))
            .collect::<Vec<_>>(),
        e.iter().map(|e| (&e.path, e.sha256)).collect::<Vec<_>>()
    );
}

#[test]
fn a_path_through_a_symlink_or_onto_a_file_is_refused() {
    let d = def_of("[config]\ntmpfs = [\"/var/run/app\"]\n");
    let mut files = Merger::default();
    files.put(record("/var", FileKind::Dir, 0o755, None));
    files.put(record("/var/run", FileKind::Symlink, 0o777, Some("/run")));
    let e = entries(&d, &files, &Databases::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("config.tmpfs (/var/run/app)")
            && e.contains("/var/run is a symlink in the image")
            && e.contains("points to /run"),
        "{e}"
    );
    let d = def_of("[[account]]\nname = \"app\"\nuid = 1\nhome = \"/srv\"\n");
    let mut files = Merger::default();
    files.put(record("/srv", FileKind::File, 0o644, None));
    let e = entries(&d, &files, &Databases::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("account[0].home (app)") && e.contains("is a file"),
        "{e}"
    );
}
