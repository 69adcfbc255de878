//! The sampling cadence as a timerfd the runtime's epoll watches. A tokio `interval` of 1 s
//! woke the runtime twice per tick: tokio's timer wheel keeps deadlines more than 64 ms away
//! in 64 ms slots, so the driver first wakes at the slot's start and then again at the
//! deadline. A timerfd fires once, exactly, and missed ticks fold into one (as
//! `MissedTickBehavior::Skip` did). If the kernel refuses a timerfd, tokio's interval is used.

use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
};
use tokio::io::unix::AsyncFd;
use tokio::time::{Interval, MissedTickBehavior};

pub enum Ticker {
    Timerfd(AsyncFd<OwnedFd>),
    Tokio(Interval),
}

impl Ticker {
    /// The first tick is due at once, then one every `every`. Needs a running tokio runtime.
    pub fn new(every: Duration) -> Self {
        match timerfd(every) {
            Ok(fd) => Ticker::Timerfd(fd),
            Err(error) => {
                tracing::debug!(%error, "No timerfd; using tokio's timer.");
                let mut interval = tokio::time::interval(every);
                interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
                Ticker::Tokio(interval)
            }
        }
    }

    /// Waits for the next tick.
    pub async fn tick(&mut self) {
        match self {
            Ticker::Tokio(interval) => {
                interval.tick().await;
            }
            Ticker::Timerfd(fd) => loop {
                let Ok(mut guard) = fd.readable().await else {
                    // Cannot happen with a registered fd; never spin on it.
                    return std::future::pending().await;
                };
                let mut expirations = [0u8; 8];
                match guard.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut expirations)?)) {
                    Ok(Ok(_)) => {
                        // The read took every expiration, so the timer is not readable now:
                        // saying so spares the next tick a read that would only fail with
                        // EAGAIN. (A newer expiration still wakes us: tokio keeps readiness
                        // that arrived after this guard.)
                        guard.clear_ready();
                        return;
                    }
                    Ok(Err(e)) if e.kind() != std::io::ErrorKind::WouldBlock => {
                        tracing::warn!(error = %e, "Cannot read the sampling timer.");
                    }
                    _ => {} // spurious readiness: wait again
                }
            },
        }
    }
}

fn timerfd(every: Duration) -> std::io::Result<AsyncFd<OwnedFd>> {
    let fd = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )?;
    let period = rustix::time::Timespec {
        tv_sec: every.as_secs() as _,
        tv_nsec: every.subsec_nanos() as _,
    };
    // An all-zero it_value would disarm the timer: 1 ns makes the first tick due at once.
    let first = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 1,
    };
    timerfd_settime(
        &fd,
        TimerfdTimerFlags::empty(),
        &Itimerspec {
            it_interval: period,
            it_value: first,
        },
    )?;
    // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the same for
    // the AsyncFd's whole lifetime, and `as_raw_fd` always returns it.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    // Periods of 200 ms and bounds of half a period: a loaded test machine (2 cores, several
    // builds) delays a wake-up by tens of milliseconds, which a 10 ms bound took for a bug.
    const PERIOD: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn ticks_come_at_the_cadence_and_the_first_at_once() {
        let mut t = super::Ticker::new(PERIOD);
        assert!(matches!(t, super::Ticker::Timerfd(_)), "Linux has timerfd");
        let start = Instant::now();
        t.tick().await;
        assert!(start.elapsed() < PERIOD / 2, "first tick at once");
        for _ in 0..4 {
            t.tick().await;
        }
        let took = start.elapsed();
        assert!(
            took >= PERIOD * 4 - Duration::from_millis(5) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn missed_ticks_fold_into_one() {
        let mut t = super::Ticker::new(PERIOD);
        t.tick().await;
        // Five ticks missed, and the next one due 150 ms after the sleep: a tick that came
        // only then would be the cadence, not the missed ones folded into one.
        std::thread::sleep(PERIOD * 5 + PERIOD / 4);
        let start = Instant::now();
        t.tick().await; // the missed ones, once
        assert!(start.elapsed() < PERIOD / 2, "{:?}", start.elapsed());
        for _ in 0..3 {
            t.tick().await; // then the cadence again: three ticks span two periods at least
        }
        assert!(
            start.elapsed() >= PERIOD * 2 - Duration::from_millis(5),
            "{:?}",
            start.elapsed()
        );
    }
}
