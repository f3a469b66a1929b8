@0xc1f3d27a9b6e4a15;
# The ssi cluster protocol.
#
# Every connection to a node starts from its bootstrap capability, a `Gateway`.
# From there each party is handed only what it needs: an `ssirun` session gets
# the `Process` it launched, a body reaches its own deputy only, an administrator
# gets `Admin`, and a peer node gets `Peer`.

# ---------------------------------------------------------------------------
# Bootstrap

interface Gateway {
  launch @0 (spec :LaunchSpec, console :Console) -> (process :Process, pid :UInt32);
  # Starts a process whose home is this node. Its standard streams are the
  # caller's `console`; the caller gets a capability for this process only.

  admin @1 () -> (admin :Admin);
  # Cluster-wide listings (and, later, actions).

  peer @2 () -> (peer :Peer);
  # The node-to-node service.

  stage @3 () -> (sink :ImageSink, id :UInt64);
  # A place for a checkpoint on this node, named `id` once `sink.done`
  # returns; `restore` restarts it.

  restore @4 (spec :RestoreSpec, console :Console) -> (process :Process, pid :UInt32);
  # Restarts a checkpoint whose home is now this node, as `launch` starts a
  # module: its streams are the caller's `console`. It keeps its pid when
  # that pid is of this node and free; `pid` says which it has.
}

struct RestoreSpec {
  image @0 :UInt64;         # the checkpoint, staged with `stage`
  node @1 :UInt16;          # where the body goes on; 0 = at home
  stdinTty @2 :Bool;        # the caller's streams are terminals
  stdoutTty @3 :Bool;
  stderrTty @4 :Bool;
}

# ---------------------------------------------------------------------------
# Sessions: `ssirun` and the process it launched

struct LaunchSpec {
  module @0 :Data;          # the module file: binary Wasm or Wasm text
  moduleName @1 :Text;      # for messages
  command @2 :Text;         # the command line shown in listings
  args @3 :List(Text);      # argv, argv[0] first
  env @4 :List(Text);       # NAME=VALUE
  preopens @5 :List(Preopen);
  node @6 :UInt16;          # where the body starts; 0 = at home
  stdinTty @7 :Bool;        # the caller's streams are terminals
  stdoutTty @8 :Bool;
  stderrTty @9 :Bool;
  pin @10 :Bool;            # it stays where it starts: the balancer never moves it
  unknownImportsTrap @11 :Bool;  # `wasmtime run -W unknown-imports-trap`: a function
                            # import nothing provides traps when called
  maxMemorySize @12 :UInt64 = 0xffffffffffffffff;
                            # `wasmtime run -W max-memory-size`: no memory of the
                            # program's grows past this many bytes (all ones: no limit)
}

struct Preopen {
  host @0 :Text;            # a directory on the home node
  guest @1 :Text;           # the name the guest sees
}

interface Console {
  # The standard streams of the session that launched a process, served by it.

  read @0 (max :UInt32) -> (data :Data);
  # Reads at most `max` bytes of standard input; empty at end of file.

  write @1 (stream :UInt8, data :Data) -> ();
  # Writes to standard output (1) or standard error (2), and flushes: a
  # prompt without a newline shows at once. Fails if that stream cannot be
  # written (a closed pipe); the other stream goes on. (Not a streaming
  # call: a failed one would fail every later call on the console, and a
  # program's message on stderr would be lost with its stdout.)

  flush @2 () -> ();
  # Returns once every earlier write has been written out.
}

interface Process {
  wait @0 () -> (exit :Exit);
  # Resolves when the process has ended.

  signal @1 (signal :UInt8) -> ();
  # Sends a signal to the process's process group (the session's terminal
  # keys: Ctrl-C is SIGINT, Ctrl-backslash SIGQUIT).

  checkpoint @2 (stop :Bool, sink :ImageSink) -> (report :CheckpointReport);
  # As `Admin.checkpoint`, for this process (periodic checkpoints).
}

struct Exit {
  union {
    status @0 :Int32;       # `_start` returned (0) or `proc_exit(status)`
    trap @1 :List(Text);    # a Wasm trap: the error chain, outermost first
    failed @2 :List(Text);  # the host stopped the body: the error chain
    lost @3 :Text;          # the node running the body went down
    signaled @4 :UInt8;     # ended by this signal
    checkpointed @5 :Void;  # stopped after a checkpoint (`stop`), to be restarted
  }
}

# ---------------------------------------------------------------------------
# Node to node

interface Peer {
  heartbeat @0 (status :NodeStatus) -> (status :NodeStatus);
  # Exchanges liveness and load with a peer.

  hasModule @1 (hash :Data, whole :Bool) -> (present :Bool);
  # Whether this node holds the module with this SHA-256. With `whole`, the
  # answer waits until its whole module (rewind copies too) is compiled: a
  # body is about to move in, and its freeze must not wait for that.

  runBody @2 (body :BodyLaunch) -> (control :BodyControl);
  # Starts a body on this node. Dropping `control` kills the body.

  processes @3 () -> (processes :List(ProcessInfo), bodies :List(BodyStats));
  # The processes whose home is this node, and the bodies running on it.

  signal @4 (target :Int32, signal :UInt8) -> (count :UInt32);
  # Signals a process whose home is this node (`target` > 0), or every member
  # of a process group (`target` = -pgid). `count` is how many were signaled.

  identity @5 (pid :UInt32) -> (identity :Identity);
  # The identity of a process whose home is this node.

  receive @6 (body :BodyLaunch) -> (ticket :Data, arrival :Arrival);
  # Expects the ghost image of a frozen body, to restore and run here: the
  # node that holds the body streams it to this node's TCP port on a
  # connection that starts with the 8 bytes "ssi-img1", then `ticket` (16
  # bytes), then the image in its own format (see `remote/src/ghost.rs`),
  # its pages going straight into the new body's memory as they arrive.
  # `arrival.wait` answers once the body is restored and runs: the
  # acknowledgement a migration waits for. Dropping `arrival` first
  # withdraws the ticket.

  migrate @7 (pid :UInt32, node :UInt16, senderLoad :Float64, cause :MoveCause, why :Text, progress :Progress) -> (report :MigrationReport);
  # Moves a process whose home is this node to `node`, now. A balancer
  # that asks gives the load of the node it decided on (`senderLoad` > 0),
  # which the destination checks against its own; an administrator's move
  # gives 0 and is not checked. `cause` is who decided it and `why`, for
  # its event.

  checkpoint @8 (pid :UInt32, stop :Bool, sink :ImageSink) -> (report :CheckpointReport);
  # Checkpoints a process whose home is this node into `sink`.

  pin @10 (pid :UInt32, pinned :Bool) -> ();
  # Pins or unpins a process whose home is this node.

  events @11 (sink :EventSink, backlog :UInt32, follow :Bool) -> ();
  # Pushes this node's own events into `sink`: its last `backlog` first,
  # and with `follow` every new one as it happens, until a push fails.
  # Answers once the backlog is pushed. What this node observed of other
  # nodes (a peer down) is not pushed: each node says it of itself, and
  # the node serving `Admin.events` adds its own view.

  drain @12 (draining :Bool) -> (moved :UInt32, stayed :List(Text));
  # Drains this node (moves every body it can off, and takes no new ones)
  # or undrains it. `stayed` says why each body that stays could not move.

  loadModule @9 (module :Data, whole :Bool, holders :List(UInt16)) -> ();
  # Loads (instruments and compiles) a module, to hold it for bodies to
  # come: a home sends it before it moves a process here, so that the move
  # does not wait for the compilation. Answered once its runnable part is
  # compiled, or with `whole`, once the whole module is (see hasModule).
  # A node that lacks the module's compiled code first asks `holders`, the
  # nodes that may hold it, for theirs (see compiledModule): a cluster
  # compiles each module once.

  compiledModule @13 (hash :Data, fingerprint :UInt64) -> (code :Data, notFreezable :Text);
  # The whole compiled code of the module with this SHA-256
  # (`Module::serialize`), if this node holds it and its runtime has this
  # fingerprint (the same engine configuration, CPU features and versions);
  # else `code` is empty. `notFreezable`, when not empty, says why the
  # module cannot be frozen: the code is of the module as it is.

  # A body redeems its deputy's sturdy reference (`BodyLaunch.home`, `pid`,
  # `secret`) on a connection of its own: see `DeputyHello`.
}

struct BodyLaunch {
  pid @0 :UInt32;
  hash @1 :Data;            # SHA-256 of the module
  module @2 :Data;          # the module, or empty when the host holds it
  args @3 :List(Text);
  env @4 :List(Text);
  home @5 :Text;            # address of the home node
  secret @6 :Data;          # with `pid`, redeemed at `home`: see `DeputyHello`
  clockOffset @7 :UInt64;   # where the body's monotonic clock starts, in ns
  pinned @8 :Bool;          # the balancer leaves it where it is
  senderLoad @9 :Float64;   # with `Peer.receive` for a balancer's move: the
                            # sender's load, which this node may refuse to
                            # exceed (0: an administrator's move, not checked)
  unknownImportsTrap @10 :Bool;  # as `LaunchSpec.unknownImportsTrap`
  maxMemorySize @11 :UInt64 = 0xffffffffffffffff;  # as `LaunchSpec.maxMemorySize`
}

interface Arrival {
  wait @0 () -> (control :BodyControl);
  # Once the body expected with `Peer.receive` is restored and runs here.
}

interface BodyControl {
  wait @0 () -> (exit :Exit);
  kill @1 () -> ();

  freeze @2 () -> ();
  # Freezes the body, wherever it is in its code. It stays frozen, holding
  # no thread's time, until `resume` or `release`.

  resume @3 () -> ();
  # A frozen body goes on where it was.

  release @4 () -> ();
  # A frozen body is dropped: it runs elsewhere now.

  signal @5 () -> ();
  # Signals are pending for the body's handlers: it runs them at its next
  # poll point or system-call return (it asks its deputy which).

  image @6 (sink :ImageSink) -> (bytes :UInt64, memory :UInt64);
  # A frozen body's ghost image, written into `sink` (for a checkpoint).
  # `memory` is the body's linear memory, all of it.

  sendTo @7 (address :Text, ticket :Data, progress :Progress) -> (bytes :UInt64, memory :UInt64);
  # Streams a frozen body's ghost image to the node at `address`, which
  # expects it under `ticket` (`Peer.receive`): a migration's transfer.
  # `progress`, if given, is told how much is sent as it goes.

  pin @8 (pinned :Bool) -> ();
  # The home says whether the body is pinned: a pinned body is not moved by
  # the balancer of the node it runs on.
}

# Receives a ghost image in chunks (a message is at most 64 MiB).
interface ImageSink {
  write @0 (chunk :Data) -> stream;
  done @1 () -> ();
  size @2 (bytes :UInt64) -> ();
  # The size of what follows, announced first where it is known (for progress).
}

# A body's link to its deputy. A body's calls are strictly sequential and are
# the hottest path of the system, so they travel on a connection of their own,
# in lockstep, as plain Cap'n Proto messages (standard stream framing) rather
# than through the RPC layer: the body opens a TCP connection to its home,
# sends the 8 bytes "ssi-dep1", then a `DeputyHello`; the home answers with a
# `DeputyWelcome`; then each `DeputyRequest` is answered with one
# `SyscallResult`, except `write`, which is not answered.

struct DeputyHello {
  pid @0 :UInt32;
  secret @1 :Data;          # the Swiss number from `BodyLaunch`
}

struct DeputyWelcome {
  union {
    streams @0 :List(UInt32);
    # Accepted. Writes to these descriptors (the session's output streams,
    # which always take every byte) may be sent as `write`.
    refused @1 :Text;
  }
  readAhead @2 :List(UInt32);
  # Descriptors (the session's input) the body may read ahead of what its
  # program asks: it gives back what the program did not use with `unread`.
}

struct DeputyRequest {
  union {
    call @0 :Syscall;
    write @1 :FdIo;
    # A write to a stream, sent without waiting. A failure is kept at the home
    # and surfaces at the next `call` on the same descriptor.
    sync @2 :Void;
    # Answered (with `unit`) once every earlier request has been executed.
    unread @3 :FdIo;
    # Bytes read ahead from a `readAhead` descriptor that the program did not
    # use, given back (the body moves, ends, or the descriptor changes):
    # its next reads take them first. Not answered.
  }
}

# ---------------------------------------------------------------------------
# Administration

interface Admin {
  processes @0 () -> (processes :List(ProcessInfo));
  nodes @1 () -> (nodes :List(NodeInfo));
  kill @2 (target :Int32, signal :UInt8) -> (count :UInt32);
  # As `Peer.signal`, for any process of the cluster: forwarded to its home.
  migrate @3 (pid :UInt32, node :UInt16, progress :Progress) -> (report :MigrationReport);
  # As `Peer.migrate`, for any process of the cluster: forwarded to its home.
  # `progress`, if given, is told how much of the image is sent as it goes.

  checkpoint @4 (pid :UInt32, stop :Bool, sink :ImageSink) -> (report :CheckpointReport);
  # Freezes a process, writes its checkpoint (its ghost image, its deputy's
  # state and its module) into `sink`, then lets it go on, or with `stop`
  # ends it. Forwarded to its home.

  pin @5 (pid :UInt32, pinned :Bool) -> ();
  # Pins a process where it runs (the balancer never moves it; `migrate`
  # still does) or unpins it. Forwarded to its home.

  events @6 (sink :EventSink, backlog :UInt32, follow :Bool) -> ();
  # The cluster's events, pushed into `sink`: the last `backlog` of every
  # node that answers (each batch in time order), then, with `follow`,
  # every new one as it happens, until a push fails or the caller goes.
  # Answers once every backlog is pushed. A node that comes up later is
  # followed from then on.

  drain @7 (node :UInt16, draining :Bool) -> (moved :UInt32, stayed :List(Text));
  # Drains node `node` (its bodies move to other nodes, the balancer and
  # new processes keep away from it) or undrains it. Forwarded to it.
}

# Told how far an image's transfer is: `done` bytes sent, of about `total`
# (the body's memory; zero pages are not sent, so it may end short of it).
interface Progress {
  update @0 (done :UInt64, total :UInt64) -> ();
}

# Who decided a move.
enum MoveCause {
  admin @0;                 # `ssictl migrate`, `ssictl pin NODE`, the dashboard
  balancer @1;
  drain @2;                 # `ssictl drain`
}

# Something that happened to a process or a node.
struct ClusterEvent {
  timeMs @0 :UInt64;        # wall clock, ms since the Unix epoch
  kind @1 :Text;            # started, exited, killed, trapped, lost, moved,
                            # refused, checkpointed, stopped, continued,
                            # pinned, unpinned, up, down, joined, drained, undrained
  pid @2 :UInt32;           # 0 for an event of a node
  node @3 :UInt16;          # where it happened (for a move: where it went)
  message @4 :Text;         # what happened, for people
  from @5 :UInt16;          # a move: where from
  by @6 :Text;              # a move: admin, balancer, drain
  frozenMicros @7 :UInt64;  # a move or checkpoint: how long the body was frozen
  status @8 :Int32;         # exited: its status; killed: its signal
  recorder @9 :UInt16;      # the node that recorded it
  seq @10 :UInt64;          # its place in the recorder's sequence
}

# Receives cluster events.
interface EventSink {
  push @0 (events :List(ClusterEvent)) -> ();
}

struct CheckpointReport {
  pid @0 :UInt32;
  node @1 :UInt16;          # where its body ran
  imageBytes @2 :UInt64;    # the checkpoint as written
  memoryBytes @3 :UInt64;   # the body's linear memory
  freezeMicros @4 :UInt64;  # request to frozen
  totalMicros @5 :UInt64;   # request to the checkpoint taken (before writing)
}

struct MigrationReport {
  from @0 :UInt16;
  to @1 :UInt16;
  imageBytes @2 :UInt64;    # the ghost image as sent
  memoryBytes @3 :UInt64;   # the body's linear memory
  freezeMicros @4 :UInt64;  # request to frozen
  totalMicros @5 :UInt64;   # request to resumed at the destination
}

enum ProcState {
  running @0;
  migrating @1;
  checkpointing @2;
  stopped @3;
  zombie @4;                # ended, not yet waited for by its parent
  loading @5;               # its module is being prepared (instrumented, compiled)
  resuming @6;              # unwound, its body waits for the code to go on (rewind copies compiled)
}

struct ProcessInfo {
  pid @0 :UInt32;
  home @1 :UInt16;
  node @2 :UInt16;          # where the body runs now
  state @3 :ProcState;
  command @4 :Text;
  startedMs @5 :UInt64;     # wall clock, ms since the Unix epoch
  cpuNs @6 :UInt64;         # CPU time of the body
  memory @7 :UInt64;        # bytes of linear memory
  pgid @8 :UInt32;          # its process group
  pinned @9 :Text;          # why it cannot be frozen (migrated, checkpointed); empty if it can
  ppid @10 :UInt32;         # its parent; 0 for a session's process or an orphan
  moves @11 :UInt32;        # how many times it has moved (by an administrator or the balancer)
  userPinned @12 :Bool;     # pinned: the balancer never moves it
}

struct BodyStats {
  pid @0 :UInt32;
  cpuNs @1 :UInt64;
  memory @2 :UInt64;
  waiting @3 :Bool;         # it waits for the code to go on (shown `resuming`)
}

struct NodeStatus {
  id @0 :UInt16;
  address @1 :Text;
  cores @2 :UInt32;
  load1 @3 :Float64;        # one-minute load average
  memTotal @4 :UInt64;
  memAvailable @5 :UInt64;
  bodies @6 :UInt32;        # bodies running on the node
  processes @7 :UInt32;     # processes whose home is the node
  known @8 :List(Member);   # the nodes it knows of: a node that joins through
                            # one peer learns of all the others
  capacity @9 :Float64;     # what it runs at once, in cores (`ssid --cpus`)
  demand @10 :Float64;      # the CPU its bodies use now, in cores
  balancing @11 :Bool;      # it moves bodies by itself (`ssid --balance on`)
  draining @12 :Bool;       # it is drained: no new bodies go there
  rumors @13 :List(Rumor);  # the freshest statuses it holds of other nodes
                            # (gossip: each node talks to a few others a
                            # round and learns of the rest through them)
  heartbeatsSent @14 :UInt64; # heartbeats it has sent, ever
}

# What a node last heard of another, and how long ago.
struct Rumor {
  status @0 :NodeStatus;    # without rumors of its own
  ageMs @1 :UInt32;
}

struct Member {
  id @0 :UInt16;
  address @1 :Text;
}

struct NodeInfo {
  id @0 :UInt16;
  address @1 :Text;
  up @2 :Bool;
  status @3 :NodeStatus;    # the last one received
  lastSeenMs @4 :UInt64;    # ms since the last answer; 0 for the node itself
}

# ---------------------------------------------------------------------------
# WASI preview1 system calls, by value (no guest pointers)

struct Syscall {
  union {
    fdAdvise @0 :FdRange;               # with advice
    fdAllocate @1 :FdRange;
    fdClose @2 :UInt32;
    fdDatasync @3 :UInt32;
    fdFdstatGet @4 :UInt32;
    fdFdstatSetFlags @5 :FdFlags;
    fdFdstatSetRights @6 :FdRights;
    fdFilestatGet @7 :UInt32;
    fdFilestatSetSize @8 :FdOffset;
    fdFilestatSetTimes @9 :Times;
    fdPread @10 :FdIo;
    fdPrestatGet @11 :UInt32;
    fdPrestatDirName @12 :UInt32;
    fdPwrite @13 :FdIo;
    fdRead @14 :FdIo;
    fdReaddir @15 :FdIo;                # offset = cookie, len = buffer length
    fdRenumber @16 :FdPair;
    fdSeek @17 :FdSeek;
    fdSync @18 :UInt32;
    fdTell @19 :UInt32;
    fdWrite @20 :FdIo;
    pathCreateDirectory @21 :FdPath;
    pathFilestatGet @22 :FdPath;
    pathFilestatSetTimes @23 :Times;
    pathLink @24 :TwoPaths;
    pathOpen @25 :PathOpen;
    pathReadlink @26 :FdPath;
    pathRemoveDirectory @27 :FdPath;
    pathRename @28 :TwoPaths;
    pathSymlink @29 :TwoPaths;          # oldFd unused
    pathUnlinkFile @30 :FdPath;
    pollOneoff @31 :List(Subscription);
    sockAccept @32 :FdFlags;
    sockRecv @33 :FdIo;                 # flags in `flags`
    sockSend @34 :FdIo;
    sockShutdown @35 :FdFlags;          # how in `flags`
    procIdentity @36 :UInt32;           # ssi API: a process's identity (0: self)
    procKill @37 :ProcKill;             # ssi API: send a signal
    procSpawn @38 :ProcSpawn;           # ssi API: start a child
    procWait @39 :ProcWait;             # ssi API: waitpid
    procSetpgid @40 :ProcSetpgid;       # ssi API: setpgid
    procSetsid @41 :Void;               # ssi API: setsid
    procSigaction @42 :ProcSigaction;   # ssi API: sigaction
    procSigmask @43 :ProcSigmask;       # ssi API: sigprocmask
    procSignals @44 :Void;              # ssi API: the handlers to run now
  }
}

struct ProcSigaction {
  signal @0 :UInt8;
  action @1 :UInt8;         # 0 default, 1 ignore, 2 handle
  handler @2 :Data;         # the export's name, for 2
}

struct ProcSigmask {
  how @0 :UInt8;            # 0 block, 1 unblock, 2 set
  set @1 :UInt32;           # bit n - 1 for signal n
}

struct ProcSpawn {
  module @0 :Data;          # a path in the caller's namespace; empty: its own module
  args @1 :List(Data);
  env @2 :List(Data);
  fds @3 :List(FdPair);     # from: the caller's descriptor, to: the child's
  node @4 :UInt16;          # 0: the home chooses
}

struct ProcWait {
  target @0 :Int32;         # a pid, -1 any child, -pgid a group
  options @1 :UInt32;       # WNOHANG 1, WUNTRACED 2, WCONTINUED 8
}

struct ProcSetpgid {
  pid @0 :UInt32;
  pgid @1 :UInt32;
}

struct ProcKill {
  target @0 :Int32;         # a pid, or -pgid
  signal @1 :UInt8;         # 0: only check the target exists
}

struct FdRange {
  fd @0 :UInt32;
  offset @1 :UInt64;
  len @2 :UInt64;
  advice @3 :UInt8;
}

struct FdFlags {
  fd @0 :UInt32;
  flags @1 :UInt16;
}

struct FdRights {
  fd @0 :UInt32;
  base @1 :UInt64;
  inheriting @2 :UInt64;
}

struct FdOffset {
  fd @0 :UInt32;
  offset @1 :UInt64;
}

struct Times {
  fd @0 :UInt32;
  lookupFlags @1 :UInt32;
  path @2 :Data;            # empty for fd_filestat_set_times
  atim @3 :UInt64;
  mtim @4 :UInt64;
  fstFlags @5 :UInt16;
}

struct FdIo {
  fd @0 :UInt32;
  len @1 :UInt32;
  offset @2 :UInt64;
  data @3 :Data;
  flags @4 :UInt16;
}

struct FdPair {
  from @0 :UInt32;
  to @1 :UInt32;
}

struct FdSeek {
  fd @0 :UInt32;
  offset @1 :Int64;
  whence @2 :UInt8;
}

struct FdPath {
  fd @0 :UInt32;
  path @1 :Data;
  lookupFlags @2 :UInt32;
}

struct TwoPaths {
  oldFd @0 :UInt32;
  oldFlags @1 :UInt32;
  oldPath @2 :Data;
  newFd @3 :UInt32;
  newPath @4 :Data;
}

struct PathOpen {
  fd @0 :UInt32;
  dirflags @1 :UInt32;
  path @2 :Data;
  oflags @3 :UInt16;
  rightsBase @4 :UInt64;
  rightsInheriting @5 :UInt64;
  fdflags @6 :UInt16;
}

struct Subscription {
  userdata @0 :UInt64;
  union {
    clock @1 :ClockSub;
    fdRead @2 :UInt32;
    fdWrite @3 :UInt32;
  }
}

struct ClockSub {
  id @0 :UInt32;
  timeout @1 :UInt64;
  precision @2 :UInt64;
}

struct SyscallResult {
  union {
    errno @0 :UInt16;
    unit @1 :Void;
    size @2 :UInt32;
    filesize @3 :UInt64;
    bytes @4 :Data;
    fd @5 :UInt32;
    fdstat @6 :Fdstat;
    filestat @7 :Filestat;
    prestatDir @8 :UInt32;
    dirents @9 :List(Dirent);
    events @10 :List(Event);
    recv @11 :Recv;
    identity @12 :Identity;
    terminated @13 :UInt8;   # the caller's own signal ends it, now
    waited @14 :Waited;
  }
}

struct Waited {
  pid @0 :UInt32;           # 0: no child changed state (WNOHANG)
  status @1 :UInt32;        # the status word, as POSIX encodes it
}

struct Identity {
  pid @0 :UInt32;
  ppid @1 :UInt32;
  pgid @2 :UInt32;
  sid @3 :UInt32;
}

struct Fdstat {
  filetype @0 :UInt8;
  flags @1 :UInt16;
  rightsBase @2 :UInt64;
  rightsInheriting @3 :UInt64;
}

struct Filestat {
  dev @0 :UInt64;
  ino @1 :UInt64;
  filetype @2 :UInt8;
  nlink @3 :UInt64;
  size @4 :UInt64;
  atim @5 :UInt64;
  mtim @6 :UInt64;
  ctim @7 :UInt64;
}

struct Dirent {
  next @0 :UInt64;
  ino @1 :UInt64;
  filetype @2 :UInt8;
  name @3 :Data;
}

struct Event {
  userdata @0 :UInt64;
  error @1 :UInt16;
  eventtype @2 :UInt8;
  nbytes @3 :UInt64;
  flags @4 :UInt16;
}

struct Recv {
  data @0 :Data;
  roflags @1 :UInt16;
}
