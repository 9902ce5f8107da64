//! Waiting on a channel without crossbeam's yields.
//!
//! A blocking `recv` of crossbeam's bounded channels first tries again and again, calling
//! `sched_yield` four times before it parks. On a host at rest every batch and every frame
//! meets an empty channel, so each wait paid those four calls, and on a busy host each could
//! give the core away: three quarters of the shipper's context switches at 1 s cycles were
//! these (`/proc/PID/task/*/status`, `nonvoluntary_ctxt_switches`). [`recv_until`] spins as
//! briefly as crossbeam does before its yields, then parks through `Select`, which does not spin.

use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Select, TryRecvError};

/// Rounds of spinning before parking (1, 2, 4 … 64 spins, as crossbeam's `Backoff` before it
/// yields): a message a moment away under load is still taken without a wake-up.
const SPIN_ROUNDS: u32 = 6;

/// The next message of `rx`, waiting until `deadline` (`None`: for as long as it takes).
pub fn recv_until<T>(rx: &Receiver<T>, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
    for round in 0..=SPIN_ROUNDS {
        match rx.try_recv() {
            Ok(m) => return Ok(m),
            Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Empty) => (0..1u32 << round).for_each(|_| std::hint::spin_loop()),
        }
    }
    let mut select = Select::new();
    select.recv(rx);
    let ready = match deadline {
        None => select.select(),
        Some(d) => select.select_deadline(d).map_err(|_| RecvTimeoutError::Timeout)?,
    };
    ready.recv(rx).map_err(|_| RecvTimeoutError::Disconnected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn takes_a_message_waits_for_one_times_out_and_sees_the_senders_gone() {
        let (tx, rx) = crossbeam_channel::bounded(4);
        tx.send(1).expect("send");
        assert_eq!(recv_until(&rx, None), Ok(1));
        let later = std::thread::spawn({
            let tx = tx.clone();
            move || {
                std::thread::sleep(Duration::from_millis(50));
                tx.send(2).expect("send");
            }
        });
        assert_eq!(recv_until(&rx, None), Ok(2));
        later.join().expect("sender");
        let start = Instant::now();
        assert_eq!(recv_until(&rx, Some(start + Duration::from_millis(30))), Err(RecvTimeoutError::Timeout));
        assert!(start.elapsed() >= Duration::from_millis(30));
        tx.send(3).expect("send");
        drop(tx);
        // What was sent before the last sender went is still received, then the end.
        assert_eq!(recv_until(&rx, Some(Instant::now())), Ok(3));
        assert_eq!(recv_until(&rx, None), Err(RecvTimeoutError::Disconnected));

        // The last sender goes while the receiver is parked.
        let (tx, rx) = crossbeam_channel::bounded::<u8>(4);
        let going = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(tx);
        });
        assert_eq!(recv_until(&rx, None), Err(RecvTimeoutError::Disconnected));
        going.join().expect("sender");
    }
}
