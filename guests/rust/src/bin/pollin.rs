//! Waits for its standard input to be readable (a `poll_oneoff` with an
//! `fd_read` subscription on fd 0 and a clock of the seconds given as its
//! argument, 2 by default), prints what the poll said, then reads stdin to
//! its end and prints how many bytes came: how a program under cron or
//! `nohup … < /dev/null` sees its input, or one that waits for input a while.
use std::io::Read;
use wasi::*;

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let subs = [
        Subscription {
            userdata: 1,
            u: SubscriptionU {
                tag: EVENTTYPE_FD_READ.raw(),
                u: SubscriptionUU {
                    fd_read: SubscriptionFdReadwrite { file_descriptor: 0 },
                },
            },
        },
        Subscription {
            userdata: 2,
            u: SubscriptionU {
                tag: EVENTTYPE_CLOCK.raw(),
                u: SubscriptionUU {
                    clock: SubscriptionClock {
                        id: CLOCKID_MONOTONIC,
                        timeout: seconds * 1_000_000_000,
                        precision: 0,
                        flags: 0,
                    },
                },
            },
        },
    ];
    // SAFETY: an all-zero event is a valid value to be overwritten.
    let mut events = [unsafe { std::mem::zeroed::<Event>() }; 2];
    // SAFETY: both arrays are valid for the counts given.
    match unsafe { poll_oneoff(subs.as_ptr(), events.as_mut_ptr(), 2) } {
        Ok(n) => {
            for e in &events[..n] {
                let what = if e.userdata == 1 { "stdin" } else { "clock" };
                println!("{what}: error {}", e.error.name());
            }
        }
        Err(e) => println!("poll_oneoff: err {}", e.name()),
    }
    let mut all = Vec::new();
    match std::io::stdin().read_to_end(&mut all) {
        Ok(n) => println!("read {n} bytes"),
        Err(e) => println!("read: {e}"),
    }
}
