//! Exercises the file system through a preopened directory mounted at `/sandbox`
//! (or the directory given as the first argument): create, write, seek, read,
//! readdir, rename, unlink, symlinks, hard links, stat, truncate, append — and the
//! error paths (missing files, escapes, directories opened as files). The preopen
//! must be the first one (fd 3): symlinks are made through it directly.
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::Path;

#[link(wasm_import_module = "wasi_snapshot_preview1")]
unsafe extern "C" {
    #[link_name = "path_symlink"]
    fn wasi_path_symlink(old: *const u8, old_len: usize, fd: u32, new: *const u8, new_len: usize) -> u16;
}

/// Creates a symlink `link` (relative to the first preopen, fd 3) pointing at `target`.
fn symlink(target: &str, link: &str) -> Result<(), u16> {
    // SAFETY: both pointers are valid for their lengths for the duration of the call.
    let errno = unsafe { wasi_path_symlink(target.as_ptr(), target.len(), 3, link.as_ptr(), link.len()) };
    if errno == 0 { Ok(()) } else { Err(errno) }
}

fn kind(e: std::io::Error) -> String {
    format!("{:?}", e.kind())
}

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("readdir")
        .map(|e| {
            let e = e.expect("entry");
            let ft = e.file_type().expect("file type");
            let tag = if ft.is_dir() { "/" } else if ft.is_symlink() { "@" } else { "" };
            format!("{}{tag}", e.file_name().to_string_lossy())
        })
        .collect();
    names.sort();
    names
}

fn main() {
    let root = std::env::args().nth(1).unwrap_or_else(|| "/sandbox".into());
    let root = Path::new(&root);
    println!("initial: {:?}", list(root));
    if let Ok(text) = fs::read_to_string(root.join("input.txt")) {
        println!("input.txt: {} bytes, {} lines", text.len(), text.lines().count());
    }

    // create, write, seek, read
    let p = root.join("data.bin");
    let mut f = File::create(&p).expect("create");
    f.write_all(b"0123456789abcdef").expect("write");
    f.seek(SeekFrom::Start(4)).expect("seek");
    f.write_all(b"XY").expect("overwrite");
    let end = f.seek(SeekFrom::End(0)).expect("seek end");
    println!("size after write: {end}");
    drop(f);
    let mut f = File::open(&p).expect("open");
    f.seek(SeekFrom::Start(2)).expect("seek");
    let mut buf = [0u8; 6];
    f.read_exact(&mut buf).expect("read");
    println!("read at 2: {}", String::from_utf8_lossy(&buf));
    println!("position: {}", f.stream_position().expect("tell"));
    println!("write to read-only: {}", f.write(b"no").map_err(kind).err().unwrap_or_default());

    // append and truncate
    let mut a = OpenOptions::new().append(true).open(&p).expect("append");
    a.write_all(b"++").expect("append write");
    drop(a);
    println!("after append: {}", fs::read_to_string(&p).expect("read back"));
    let t = OpenOptions::new().write(true).open(&p).expect("open rw");
    t.set_len(5).expect("truncate");
    drop(t);
    println!("after truncate: {:?}", fs::read_to_string(&p).expect("read back"));

    // directories
    fs::create_dir_all(root.join("a/b/c")).expect("mkdir -p");
    fs::write(root.join("a/b/c/deep.txt"), b"deep").expect("write deep");
    println!("a/b/c: {:?}", list(&root.join("a/b/c")));
    println!("rmdir non-empty: {}", fs::remove_dir(root.join("a/b/c")).map_err(kind).err().unwrap_or_default());

    // rename, hard link, unlink
    fs::rename(root.join("a/b/c/deep.txt"), root.join("moved.txt")).expect("rename");
    fs::hard_link(root.join("moved.txt"), root.join("linked.txt")).expect("hard link");
    println!("linked: {}", fs::read_to_string(root.join("linked.txt")).expect("read link"));
    fs::remove_file(root.join("linked.txt")).expect("unlink");
    fs::remove_dir(root.join("a/b/c")).expect("rmdir");

    // symlinks
    symlink("moved.txt", "sym").expect("symlink");
    println!("readlink: {:?}", fs::read_link(root.join("sym")).expect("readlink"));
    println!("through symlink: {}", fs::read_to_string(root.join("sym")).expect("follow"));
    let lm = fs::symlink_metadata(root.join("sym")).expect("lstat");
    println!("lstat is symlink: {}", lm.file_type().is_symlink());

    // stat
    let m = fs::metadata(root.join("moved.txt")).expect("stat");
    println!("moved.txt: file={} dir={} len={}", m.is_file(), m.is_dir(), m.len());
    let d = fs::metadata(root.join("a")).expect("stat dir");
    println!("a: file={} dir={}", d.is_file(), d.is_dir());

    // error paths
    println!("open missing: {}", File::open(root.join("nope")).map_err(kind).err().unwrap_or_default());
    println!("escape with ..: {}", File::open(root.join("../etc/passwd")).map_err(kind).err().unwrap_or_default());
    println!("absolute symlink target: {:?}", symlink("/etc/passwd", "abs"));
    symlink("../../outside.txt", "evil").expect("escaping symlink");
    println!("escape through symlink: {}", File::open(root.join("evil")).map_err(kind).err().unwrap_or_default());
    println!("create existing dir: {}", fs::create_dir(root.join("a")).map_err(kind).err().unwrap_or_default());
    println!("read dir as file: {}", fs::read(root.join("a")).map_err(kind).err().unwrap_or_default());
    println!("unlink dir: {}", fs::remove_file(root.join("a")).map_err(kind).err().unwrap_or_default());
    let excl = OpenOptions::new().write(true).create_new(true).open(root.join("moved.txt"));
    println!("create_new existing: {}", excl.map_err(kind).err().unwrap_or_default());
    assert_eq!(File::open(root.join("nope")).map_err(|e| e.kind()).err(), Some(ErrorKind::NotFound));

    fs::remove_file(root.join("evil")).expect("unlink evil");
    println!("final: {:?}", list(root));
}
