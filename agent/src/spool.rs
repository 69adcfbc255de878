//! The bounded spool of unacknowledged samples, oldest first. Samples are kept CBOR-encoded
//! (about half the size of the structs with their heap parts). Cumulative acks trim it; when
//! it is full the oldest sample is dropped and counted, and that count travels in every later
//! sample's `dropped` field.

use std::collections::VecDeque;

/// A per-run sequence number: 1, 2, 3... without gaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Seq(pub u64);

/// One spooled sample: its seq and its encoded `Sample` body.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: Seq,
    pub body: Box<[u8]>,
}

#[derive(Debug)]
pub struct Spool {
    entries: VecDeque<Entry>,
    /// Most entries kept: bounds memory while the master is away.
    capacity: usize,
    /// Samples this run dropped because the spool was full (reported to the master).
    dropped: u64,
    /// Seqs (first, last) of evicted samples that had been handed to a connection: the
    /// master may hold them or not; the next welcome says which (see [`Spool::settle`]).
    unsettled: Option<(Seq, Seq)>,
}

impl Spool {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        // Grow on demand: a healthy agent holds only a few unacked samples.
        Spool {
            entries: VecDeque::with_capacity(capacity.min(64)),
            capacity,
            dropped: 0,
            unsettled: None,
        }
    }

    /// Makes room for one more sample, evicting the oldest if full. Call before stamping a
    /// sample's `dropped` field, so that field includes this drop. An evicted sample is
    /// counted as dropped only if it was never handed to a connection (seq > `handed_upto`):
    /// one the master received but did not ack yet is not lost, and counting it would make
    /// the master's books (received + dropped + missing) add up to more than it should.
    pub fn make_room(&mut self, handed_upto: Seq) {
        while self.entries.len() >= self.capacity {
            if let Some(e) = self.entries.pop_front() {
                if e.seq > handed_upto {
                    self.dropped += 1;
                } else {
                    let first = self.unsettled.map_or(e.seq, |(f, _)| f);
                    self.unsettled = Some((first, e.seq));
                }
            }
        }
    }

    /// Appends the newest sample. Sequence numbers must increase.
    pub fn push(&mut self, seq: Seq, body: Box<[u8]>) {
        debug_assert!(self.entries.back().is_none_or(|e| e.seq < seq));
        self.make_room(Seq(0));
        self.entries.push_back(Entry { seq, body });
    }

    /// A welcome said the master holds everything up to `master_holds`: evicted samples it
    /// had been handed but does not hold (a connection died with them in flight) are lost
    /// after all, and counted as dropped now, so the master can explain its gap.
    pub fn settle(&mut self, master_holds: Seq) {
        if let Some((first, last)) = self.unsettled.take() {
            let from = first.0.max(master_holds.0 + 1);
            self.dropped += (last.0 + 1).saturating_sub(from);
        }
    }

    /// Cumulative ack: every sample with seq <= `upto` is stored by the master.
    pub fn ack(&mut self, upto: Seq) {
        while self.entries.front().is_some_and(|e| e.seq <= upto) {
            self.entries.pop_front();
        }
    }

    /// Samples after `seq`, oldest first: what to (re)send after the master said it holds
    /// everything up to `seq`.
    pub fn after(&self, seq: Seq) -> impl Iterator<Item = &Entry> {
        let start = self.entries.partition_point(|e| e.seq <= seq);
        self.entries.range(start..)
    }

    /// Seq of the oldest unacked sample.
    pub fn oldest(&self) -> Option<Seq> {
        self.entries.front().map(|e| e.seq)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool_with(capacity: usize, seqs: std::ops::RangeInclusive<u64>) -> Spool {
        let mut s = Spool::new(capacity);
        for n in seqs {
            s.push(Seq(n), vec![n as u8].into_boxed_slice());
        }
        s
    }

    fn seqs(it: impl Iterator<Item = Entry>) -> Vec<u64> {
        it.map(|e| e.seq.0).collect()
    }

    #[test]
    fn keeps_samples_in_order() {
        let s = spool_with(10, 1..=5);
        assert_eq!(seqs(s.after(Seq(0)).cloned()), vec![1, 2, 3, 4, 5]);
        assert_eq!(
            s.after(Seq(0)).map(|e| e.body[0]).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn overflow_drops_the_oldest_and_counts_them() {
        let mut s = spool_with(3, 1..=7);
        assert_eq!(s.dropped(), 4);
        assert_eq!(seqs(s.after(Seq(0)).cloned()), vec![5, 6, 7]);
        s.make_room(Seq(0));
        assert_eq!(
            s.dropped(),
            5,
            "make_room counts the drop before the next push"
        );
        s.push(Seq(8), Box::new([]));
        assert_eq!(s.dropped(), 5);
        assert_eq!(seqs(s.after(Seq(0)).cloned()), vec![6, 7, 8]);
    }

    #[test]
    fn evicting_a_sample_already_sent_is_not_a_drop() {
        let mut s = spool_with(3, 1..=3);
        s.make_room(Seq(2));
        s.push(Seq(4), Box::new([]));
        assert_eq!(s.dropped(), 0, "seq 1 was sent: the master may hold it");
        s.make_room(Seq(2));
        s.push(Seq(5), Box::new([]));
        s.make_room(Seq(2));
        assert_eq!(s.dropped(), 1, "seq 3 was never sent");
        assert_eq!(seqs(s.after(Seq(0)).cloned()), vec![4, 5]);
    }

    #[test]
    fn sent_samples_evicted_but_not_held_by_the_master_count_once_it_says_so() {
        let mut s = spool_with(3, 1..=3);
        for n in 4..=6 {
            s.make_room(Seq(3)); // 1..=3 were handed to a connection that died
            s.push(Seq(n), Box::new([]));
        }
        assert_eq!(s.dropped(), 0, "the master may hold 1..=3");
        s.settle(Seq(1)); // the welcome: it holds only seq 1
        assert_eq!(s.dropped(), 2, "2 and 3 are lost after all");
        s.settle(Seq(1));
        assert_eq!(s.dropped(), 2, "settled once");
    }

    #[test]
    fn cumulative_ack_trims_everything_up_to_it() {
        let mut s = spool_with(10, 1..=5);
        s.ack(Seq(3));
        assert_eq!(seqs(s.after(Seq(0)).cloned()), vec![4, 5]);
        s.ack(Seq(2)); // a stale ack changes nothing
        assert_eq!(s.len(), 2);
        s.ack(Seq(99));
        assert!(s.is_empty());
        assert_eq!(s.dropped(), 0, "acked samples are not drops");
    }

    #[test]
    fn resumes_after_the_masters_last_seq_on_welcome() {
        let mut s = spool_with(10, 1..=6);
        s.ack(Seq(2));
        // The master says it holds up to 4 (it received 3 and 4 but never acked them).
        s.ack(Seq(4));
        assert_eq!(seqs(s.after(Seq(4)).cloned()), vec![5, 6]);
        // A master that lost everything (last_seq 0) gets every unacked sample again.
        assert_eq!(seqs(s.after(Seq(0)).cloned()), vec![5, 6]);
        assert_eq!(seqs(s.after(Seq(5)).cloned()), vec![6]);
        assert_eq!(s.after(Seq(6)).count(), 0);
    }
}
