;; The bundled example: a WASI command that greets whoever is named on its command
;; line (or the world), written in WebAssembly text so it needs no compiler.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get"
    (func $args_get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "Hello, ")
  (data (i32.const 32) "world")
  (data (i32.const 48) "! (from a WASI process run by ssi)\n")

  ;; write(ptr, len) to stdout through an iovec at offset 0
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))

  (func $strlen (param $p i32) (result i32)
    (local $n i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $n))

  (func (export "_start")
    (local $argc i32)
    (call $write (i32.const 16) (i32.const 7))
    ;; argc at 100, argv buffer size at 104; argv pointers at 1024, strings at 2048
    (drop (call $args_sizes_get (i32.const 100) (i32.const 104)))
    (local.set $argc (i32.load (i32.const 100)))
    (if (i32.gt_u (local.get $argc) (i32.const 1))
      (then
        (drop (call $args_get (i32.const 1024) (i32.const 2048)))
        (call $write (i32.load (i32.const 1028))
                     (call $strlen (i32.load (i32.const 1028)))))
      (else (call $write (i32.const 32) (i32.const 5))))
    (call $write (i32.const 48) (i32.const 35))))
