//! Calls every `wasi_snapshot_preview1` function directly, on success and error
//! paths, and prints one deterministic line per call. Expects a preopen at fd 3
//! holding `input.txt` with the text "hello conformance\n", and stdin closed.
use wasi::*;

fn show<T: std::fmt::Debug>(name: &str, r: Result<T, Errno>) {
    match r {
        Ok(v) => println!("{name}: ok {v:?}"),
        Err(e) => println!("{name}: err {}", e.name()),
    }
}

fn err_only<T>(name: &str, r: Result<T, Errno>) {
    match r {
        Ok(_) => println!("{name}: ok"),
        Err(e) => println!("{name}: err {}", e.name()),
    }
}

fn stat_line(st: &Filestat) -> String {
    format!("type={} size={} nlink={}", st.filetype.raw(), st.size, st.nlink)
}

const DIR: Fd = 3;
const RW: Rights = RIGHTS_FD_READ | RIGHTS_FD_WRITE | RIGHTS_FD_SEEK | RIGHTS_FD_TELL
    | RIGHTS_FD_FILESTAT_GET | RIGHTS_FD_FILESTAT_SET_SIZE | RIGHTS_FD_FILESTAT_SET_TIMES
    | RIGHTS_FD_SYNC | RIGHTS_FD_DATASYNC | RIGHTS_FD_ADVISE | RIGHTS_FD_ALLOCATE
    | RIGHTS_FD_FDSTAT_SET_FLAGS;

unsafe fn open(path: &str, oflags: Oflags, rights: Rights, fdflags: Fdflags) -> Result<Fd, Errno> {
    unsafe { path_open(DIR, LOOKUPFLAGS_SYMLINK_FOLLOW, path, oflags, rights, rights, fdflags) }
}

fn main() {
    unsafe { run() }
}

unsafe fn run() {
    unsafe {
        // args and environment
        let (argc, argsz) = args_sizes_get().expect("args sizes");
        println!("args_sizes_get: {argc} {argsz}");
        let mut argv = vec![std::ptr::null_mut(); argc];
        let mut buf = vec![0u8; argsz];
        show("args_get", args_get(argv.as_mut_ptr(), buf.as_mut_ptr()));
        println!("args: {:?}", String::from_utf8_lossy(&buf));
        let (envc, envsz) = environ_sizes_get().expect("env sizes");
        println!("environ_sizes_get: {envc} {envsz}");
        let mut envp = vec![std::ptr::null_mut(); envc];
        let mut ebuf = vec![0u8; envsz];
        show("environ_get", environ_get(envp.as_mut_ptr(), ebuf.as_mut_ptr()));
        println!("env: {:?}", String::from_utf8_lossy(&ebuf));

        // clocks, randomness, scheduling
        println!("clock_res_get realtime > 0: {}", clock_res_get(CLOCKID_REALTIME).map(|r| r > 0).unwrap_or(false));
        println!("clock_res_get monotonic > 0: {}", clock_res_get(CLOCKID_MONOTONIC).map(|r| r > 0).unwrap_or(false));
        let t1 = clock_time_get(CLOCKID_MONOTONIC, 1).expect("monotonic");
        let t2 = clock_time_get(CLOCKID_MONOTONIC, 1).expect("monotonic");
        println!("clock_time_get monotonic ordered: {}", t2 >= t1);
        println!("clock_time_get realtime sane: {}", clock_time_get(CLOCKID_REALTIME, 1).map(|t| t > 1_600_000_000_000_000_000).unwrap_or(false));
        let mut r1 = [0u8; 32];
        let mut r2 = [0u8; 32];
        show("random_get", random_get(r1.as_mut_ptr(), r1.len()));
        show("random_get again", random_get(r2.as_mut_ptr(), r2.len()));
        println!("random differs: {}", r1 != r2);
        show("sched_yield", sched_yield());

        // preopens
        match fd_prestat_get(DIR) {
            Ok(p) => {
                let len = p.u.dir.pr_name_len;
                let mut name = vec![0u8; len];
                show("fd_prestat_dir_name", fd_prestat_dir_name(DIR, name.as_mut_ptr(), len));
                println!("preopen name: {:?}", String::from_utf8_lossy(&name));
                let mut short = vec![0u8; len];
                err_only("fd_prestat_dir_name short buffer", fd_prestat_dir_name(DIR, short.as_mut_ptr(), len - 1));
            }
            Err(e) => println!("fd_prestat_get: err {}", e.name()),
        }
        err_only("fd_prestat_get stdout", fd_prestat_get(1));
        err_only("fd_prestat_get bad fd", fd_prestat_get(99));

        // fdstat of streams and the preopen
        for fd in [1u32, 2, DIR] {
            match fd_fdstat_get(fd) {
                Ok(st) => println!("fd_fdstat_get {fd}: type={} flags={} base={:x} inh={:x}", st.fs_filetype.raw(), st.fs_flags, st.fs_rights_base, st.fs_rights_inheriting),
                Err(e) => println!("fd_fdstat_get {fd}: err {}", e.name()),
            }
        }
        err_only("fd_fdstat_get bad fd", fd_fdstat_get(99));

        // write, read, seek, tell, pread, pwrite
        let f = open("new.txt", OFLAGS_CREAT | OFLAGS_TRUNC, RW, 0).expect("create new.txt");
        println!("path_open create: fd {f}");
        let data = b"0123456789";
        show("fd_write", fd_write(f, &[Ciovec { buf: data.as_ptr(), buf_len: data.len() }]));
        show("fd_tell", fd_tell(f));
        show("fd_seek set 2", fd_seek(f, 2, WHENCE_SET));
        show("fd_seek cur 3", fd_seek(f, 3, WHENCE_CUR));
        show("fd_seek end -1", fd_seek(f, -1, WHENCE_END));
        err_only("fd_seek negative", fd_seek(f, -100, WHENCE_SET));
        let mut rb = [0u8; 4];
        show("fd_read", fd_read(f, &[Iovec { buf: rb.as_mut_ptr(), buf_len: rb.len() }]));
        let mut pb = [0u8; 3];
        show("fd_pread", fd_pread(f, &[Iovec { buf: pb.as_mut_ptr(), buf_len: pb.len() }], 4));
        println!("pread bytes: {:?}", String::from_utf8_lossy(&pb));
        show("fd_pwrite", fd_pwrite(f, &[Ciovec { buf: b"AB".as_ptr(), buf_len: 2 }], 0));
        show("fd_tell after pwrite", fd_tell(f));
        match fd_filestat_get(f) {
            Ok(st) => println!("fd_filestat_get: {}", stat_line(&st)),
            Err(e) => println!("fd_filestat_get: err {}", e.name()),
        }
        show("fd_filestat_set_size", fd_filestat_set_size(f, 4));
        match fd_filestat_get(f) {
            Ok(st) => println!("fd_filestat_get after truncate: {}", stat_line(&st)),
            Err(e) => println!("fd_filestat_get: err {}", e.name()),
        }
        show("fd_filestat_set_times", fd_filestat_set_times(f, 1_000_000_000, 2_000_000_000, FSTFLAGS_ATIM | FSTFLAGS_MTIM));
        match fd_filestat_get(f) {
            Ok(st) => println!("mtim after set: {}", st.mtim),
            Err(e) => println!("fd_filestat_get: err {}", e.name()),
        }
        err_only("fd_filestat_set_times conflicting", fd_filestat_set_times(f, 0, 0, FSTFLAGS_ATIM | FSTFLAGS_ATIM_NOW));
        show("fd_advise", fd_advise(f, 0, 4, ADVICE_SEQUENTIAL));
        err_only("fd_allocate", fd_allocate(f, 0, 100));
        show("fd_sync", fd_sync(f));
        show("fd_datasync", fd_datasync(f));
        match fd_fdstat_get(f) {
            Ok(st) => println!("fd_fdstat_get file: type={} flags={} base={:x}", st.fs_filetype.raw(), st.fs_flags, st.fs_rights_base),
            Err(e) => println!("fd_fdstat_get file: err {}", e.name()),
        }
        show("fd_fdstat_set_flags append", fd_fdstat_set_flags(f, FDFLAGS_APPEND));
        match fd_fdstat_get(f) {
            Ok(st) => println!("flags after set: {}", st.fs_flags),
            Err(e) => println!("fd_fdstat_get: err {}", e.name()),
        }
        err_only("fd_fdstat_set_rights", fd_fdstat_set_rights(f, 0, 0));

        // read-only descriptors refuse writes; directories refuse reads
        let ro = open("input.txt", 0, RIGHTS_FD_READ | RIGHTS_FD_SEEK, 0).expect("open input");
        let mut ib = [0u8; 64];
        match fd_read(ro, &[Iovec { buf: ib.as_mut_ptr(), buf_len: ib.len() }]) {
            Ok(n) => println!("fd_read input: {n} {:?}", String::from_utf8_lossy(&ib[..n])),
            Err(e) => println!("fd_read input: err {}", e.name()),
        }
        err_only("fd_write read-only", fd_write(ro, &[Ciovec { buf: data.as_ptr(), buf_len: 1 }]));
        // Read-only is the lack of FD_WRITE, whatever else is asked: Go's
        // O_RDONLY asks for FD_FILESTAT_SET_SIZE and FD_FDSTAT_SET_FLAGS too.
        let rights = RIGHTS_FD_READ | RIGHTS_FD_SEEK | RIGHTS_FD_TELL | RIGHTS_FD_FILESTAT_GET
            | RIGHTS_FD_FILESTAT_SET_SIZE | RIGHTS_FD_FDSTAT_SET_FLAGS | RIGHTS_FD_SYNC;
        let ro2 = open("input.txt", 0, rights, 0).expect("open input again");
        err_only("fd_write without FD_WRITE", fd_write(ro2, &[Ciovec { buf: data.as_ptr(), buf_len: 1 }]));
        err_only("fd_pwrite without FD_WRITE", fd_pwrite(ro2, &[Ciovec { buf: data.as_ptr(), buf_len: 1 }], 0));
        err_only("fd_filestat_set_size without FD_WRITE", fd_filestat_set_size(ro2, 1));
        show("fd_close read-only", fd_close(ro2));
        err_only("fd_filestat_set_size stdout", fd_filestat_set_size(1, 0));
        err_only("fd_read directory", fd_read(DIR, &[Iovec { buf: ib.as_mut_ptr(), buf_len: 4 }]));
        err_only("fd_write bad fd", fd_write(99, &[Ciovec { buf: data.as_ptr(), buf_len: 1 }]));
        err_only("fd_seek stdout", fd_seek(1, 0, WHENCE_CUR));

        // renumber and close
        show("fd_renumber", fd_renumber(ro, f));
        err_only("fd_renumber bad", fd_renumber(99, f));
        err_only("fd_close old", fd_close(ro));
        show("fd_close", fd_close(f));
        err_only("fd_close twice", fd_close(f));

        // path operations
        show("path_create_directory", path_create_directory(DIR, "sub"));
        err_only("path_create_directory exists", path_create_directory(DIR, "sub"));
        err_only("path_create_directory escape", path_create_directory(DIR, "../escape"));
        match path_filestat_get(DIR, LOOKUPFLAGS_SYMLINK_FOLLOW, "input.txt") {
            Ok(st) => println!("path_filestat_get: {}", stat_line(&st)),
            Err(e) => println!("path_filestat_get: err {}", e.name()),
        }
        err_only("path_filestat_get missing", path_filestat_get(DIR, 0, "missing"));
        show("path_filestat_set_times", path_filestat_set_times(DIR, 0, "input.txt", 0, 3_000_000_000, FSTFLAGS_MTIM));
        show("path_symlink", path_symlink("input.txt", DIR, "link"));
        let mut lb = [0u8; 64];
        match path_readlink(DIR, "link", lb.as_mut_ptr(), lb.len()) {
            Ok(n) => println!("path_readlink: {:?}", String::from_utf8_lossy(&lb[..n])),
            Err(e) => println!("path_readlink: err {}", e.name()),
        }
        err_only("path_readlink not a link", path_readlink(DIR, "input.txt", lb.as_mut_ptr(), lb.len()));
        match path_filestat_get(DIR, 0, "link") {
            Ok(st) => println!("path_filestat_get nofollow: type={}", st.filetype.raw()),
            Err(e) => println!("path_filestat_get nofollow: err {}", e.name()),
        }
        show("path_symlink escaping", path_symlink("../../etc/passwd", DIR, "evil"));
        err_only("path_open through escaping symlink", open("evil", 0, RIGHTS_FD_READ, 0));
        err_only("path_open dotdot", open("../x", 0, RIGHTS_FD_READ, 0));
        err_only("path_open absolute", open("/etc/passwd", 0, RIGHTS_FD_READ, 0));
        err_only("path_open missing", open("missing", 0, RIGHTS_FD_READ, 0));
        err_only("path_open file as directory", open("input.txt", OFLAGS_DIRECTORY, RIGHTS_FD_READ, 0));
        err_only("path_open excl existing", open("input.txt", OFLAGS_CREAT | OFLAGS_EXCL, RW, 0));
        err_only("path_open dir for writing", open("sub", 0, RIGHTS_FD_WRITE, 0));
        err_only("path_open on a file fd", path_open(1, 0, "x", 0, 0, 0, 0));
        show("path_link", path_link(DIR, 0, "input.txt", DIR, "hard"));
        err_only("path_link exists", path_link(DIR, 0, "input.txt", DIR, "hard"));
        show("path_rename", path_rename(DIR, "hard", DIR, "sub/moved"));
        err_only("path_rename missing", path_rename(DIR, "nothing", DIR, "x"));
        err_only("path_remove_directory non-empty", path_remove_directory(DIR, "sub"));
        err_only("path_unlink_file directory", path_unlink_file(DIR, "sub"));
        show("path_unlink_file", path_unlink_file(DIR, "sub/moved"));
        err_only("path_unlink_file missing", path_unlink_file(DIR, "sub/moved"));
        show("path_remove_directory", path_remove_directory(DIR, "sub"));
        show("path_unlink_file link", path_unlink_file(DIR, "link"));
        show("path_unlink_file evil", path_unlink_file(DIR, "evil"));
        let bad_path = [0xffu8, 0xfe];
        let mut out_fd = 0u32;
        let raw = wasi::wasi_snapshot_preview1::path_open(
            DIR as i32, 0, bad_path.as_ptr() as i32, 2, 0, RIGHTS_FD_READ as i64, 0, 0, &mut out_fd as *mut u32 as i32,
        );
        println!("path_open invalid utf-8 path: errno {raw}");

        // directories and readdir
        let d = open("dir", OFLAGS_CREAT, RW, 0);
        err_only("path_open creat on missing dir name", d.map(|fd| { let _ = fd_close(fd); }));
        show("path_unlink_file created", path_unlink_file(DIR, "dir"));
        path_create_directory(DIR, "list").expect("mkdir list");
        for n in ["b", "a", "c"] {
            let fd = open(&format!("list/{n}"), OFLAGS_CREAT, RW, 0).expect("create");
            fd_close(fd).expect("close");
        }
        let ld = path_open(DIR, 0, "list", OFLAGS_DIRECTORY, RIGHTS_FD_READDIR, RW, 0).expect("open dir");
        let mut names = Vec::new();
        let mut cookie = 0u64;
        let mut rdbuf = vec![0u8; 40];
        loop {
            let used = fd_readdir(ld, rdbuf.as_mut_ptr(), rdbuf.len(), cookie).expect("readdir");
            let mut at = 0;
            let mut progressed = false;
            while at + 24 <= used {
                let next = u64::from_le_bytes(rdbuf[at..at + 8].try_into().expect("8"));
                let namlen = u32::from_le_bytes(rdbuf[at + 16..at + 20].try_into().expect("4")) as usize;
                if at + 24 + namlen > used { break; }
                names.push(String::from_utf8_lossy(&rdbuf[at + 24..at + 24 + namlen]).into_owned());
                cookie = next;
                at += 24 + namlen;
                progressed = true;
            }
            if used < rdbuf.len() { break; }
            if !progressed { rdbuf.resize(rdbuf.len() * 2, 0); }
        }
        names.sort();
        println!("fd_readdir (small buffer): {names:?}");
        match fd_fdstat_get(ld) {
            Ok(st) => println!("fd_fdstat_get dir: type={}", st.fs_filetype.raw()),
            Err(e) => println!("fd_fdstat_get dir: err {}", e.name()),
        }
        err_only("fd_readdir on a file", fd_readdir(1, rdbuf.as_mut_ptr(), rdbuf.len(), 0));
        fd_close(ld).expect("close dir");

        // poll_oneoff: clocks alone, and a clock with a descriptor
        let clock = Subscription {
            userdata: 7,
            u: SubscriptionU { tag: EVENTTYPE_CLOCK.raw(), u: SubscriptionUU { clock: SubscriptionClock { id: CLOCKID_MONOTONIC, timeout: 5_000_000, precision: 0, flags: 0 } } },
        };
        let mut events = [std::mem::zeroed::<Event>(); 2];
        match poll_oneoff(&clock, events.as_mut_ptr(), 1) {
            Ok(n) => println!("poll_oneoff clock: {n} events, userdata {} type {} error {}", events[0].userdata, events[0].type_.raw(), events[0].error.raw()),
            Err(e) => println!("poll_oneoff clock: err {}", e.name()),
        }
        let subs = [
            clock,
            Subscription { userdata: 9, u: SubscriptionU { tag: EVENTTYPE_FD_WRITE.raw(), u: SubscriptionUU { fd_write: SubscriptionFdReadwrite { file_descriptor: 1 } } } },
        ];
        match poll_oneoff(subs.as_ptr(), events.as_mut_ptr(), 2) {
            Ok(n) => {
                let mut got: Vec<u64> = events[..n].iter().map(|e| e.userdata).collect();
                got.sort();
                println!("poll_oneoff stdout writable: has 9: {}", got.contains(&9));
            }
            Err(e) => println!("poll_oneoff fd: err {}", e.name()),
        }
        err_only("poll_oneoff none", poll_oneoff(subs.as_ptr(), events.as_mut_ptr(), 0));
        let bad = [Subscription { userdata: 1, u: SubscriptionU { tag: EVENTTYPE_FD_READ.raw(), u: SubscriptionUU { fd_read: SubscriptionFdReadwrite { file_descriptor: 99 } } } }];
        match poll_oneoff(bad.as_ptr(), events.as_mut_ptr(), 1) {
            Ok(n) => println!("poll_oneoff bad fd: {n} events, error {}", events[0].error.name()),
            Err(e) => println!("poll_oneoff bad fd: err {}", e.name()),
        }

        // sockets: there are none, so every call is refused
        err_only("sock_accept", sock_accept(1, 0));
        err_only("sock_recv", sock_recv(99, &[Iovec { buf: ib.as_mut_ptr(), buf_len: 4 }], 0));
        err_only("sock_send", sock_send(99, &[Ciovec { buf: data.as_ptr(), buf_len: 1 }], 0));
        err_only("sock_shutdown", sock_shutdown(99, SDFLAGS_RD));

        err_only("proc_raise", proc_raise(SIGNAL_TERM));
        println!("done");
        proc_exit(17);
    }
}
