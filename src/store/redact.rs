//! [`Redacting`]: an output sink that replaces the values of masked
//! variables with `***` before a byte reaches a log file or the live tail.
//!
//! A secret can be split across two reads of a pipe, so a chunk's tail
//! that could be the start of a secret is held back until the next chunk
//! (or the end of the stream) tells whether it is one.

use std::sync::Mutex;

use super::env::MASK;
use crate::runtime::{LogStream, OutputSink};

/// Replaces `secrets` in what it forwards to `inner`.
pub struct Redacting<S> {
    inner: S,
    /// Longest first: of two secrets where one contains the other, the
    /// longer is masked whole.
    secrets: Vec<Vec<u8>>,
    /// The held-back tail of each stream (stdout, stderr).
    carry: Mutex<[Vec<u8>; 2]>,
}

impl<S: OutputSink> Redacting<S> {
    /// Masks each non-empty value of `secrets` in the output sent to `inner`.
    pub fn new(inner: S, secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<Vec<u8>> = secrets
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(String::into_bytes)
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self {
            inner,
            secrets,
            carry: Mutex::new([Vec::new(), Vec::new()]),
        }
    }

    fn slot(stream: LogStream) -> usize {
        match stream {
            LogStream::Stdout => 0,
            LogStream::Stderr => 1,
        }
    }

    /// `buf` with every secret masked, and the tail held back (a proper
    /// prefix of a secret, at the very end).
    fn redact(&self, buf: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        'scan: while i < buf.len() {
            let rest = &buf[i..];
            for secret in &self.secrets {
                if rest.starts_with(secret) {
                    out.extend_from_slice(MASK.as_bytes());
                    i += secret.len();
                    continue 'scan;
                }
            }
            if self
                .secrets
                .iter()
                .any(|s| rest.len() < s.len() && s.starts_with(rest))
            {
                return (out, rest.to_vec());
            }
            out.push(buf[i]);
            i += 1;
        }
        (out, Vec::new())
    }
}

impl<S: OutputSink> OutputSink for Redacting<S> {
    fn write(&self, stream: LogStream, bytes: &[u8]) {
        if self.secrets.is_empty() {
            return self.inner.write(stream, bytes);
        }
        let out = {
            let mut carry = self.carry.lock().unwrap_or_else(|e| e.into_inner());
            let held = &mut carry[Self::slot(stream)];
            held.extend_from_slice(bytes);
            let (out, rest) = self.redact(held);
            *held = rest;
            out
        };
        if !out.is_empty() {
            self.inner.write(stream, &out);
        }
    }

    fn close(&self, stream: LogStream) {
        let rest = {
            let mut carry = self.carry.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut carry[Self::slot(stream)])
        };
        // Only the start of a secret, never a whole one: safe to show.
        if !rest.is_empty() {
            self.inner.write(stream, &rest);
        }
        self.inner.close(stream);
    }

    fn mark(&self, line: &str) {
        self.inner.mark(line);
    }

    fn hold(&self) {
        self.inner.hold();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// Sends every chunk it is given down a channel.
    struct Collect(mpsc::Sender<Vec<u8>>);

    impl OutputSink for Collect {
        fn write(&self, _: LogStream, bytes: &[u8]) {
            let _ = self.0.send(bytes.to_vec());
        }
        fn close(&self, _: LogStream) {}
    }

    fn through(secrets: &[&str], chunks: &[&str]) -> String {
        let (tx, rx) = mpsc::channel();
        let r = Redacting::new(Collect(tx), secrets.iter().map(|s| s.to_string()));
        for c in chunks {
            r.write(LogStream::Stdout, c.as_bytes());
        }
        r.close(LogStream::Stdout);
        drop(r);
        String::from_utf8(rx.iter().flatten().collect()).unwrap()
    }

    #[test]
    fn a_secret_is_masked_whole_in_one_chunk_or_split_across_many() {
        assert_eq!(through(&["hunter2"], &["pw=hunter2!\n"]), "pw=***!\n");
        assert_eq!(
            through(&["hunter2"], &["pw=hun", "te", "r2!\n"]),
            "pw=***!\n"
        );
        let bytes: Vec<String> = "a hunter2 b hunter2".chars().map(String::from).collect();
        let bytes: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(through(&["hunter2"], &bytes), "a *** b ***");
    }

    #[test]
    fn a_prefix_that_ends_the_stream_is_shown_and_a_near_miss_passes() {
        assert_eq!(through(&["hunter2"], &["hunt"]), "hunt");
        assert_eq!(through(&["hunter2"], &["hunter3 hunter"]), "hunter3 hunter");
    }

    #[test]
    fn the_longer_of_two_overlapping_secrets_is_masked_whole_and_empty_ones_are_ignored() {
        assert_eq!(
            through(&["abc", "abcdef", ""], &["xabcdefx abc"]),
            "x***x ***"
        );
    }
}
