//! Where an HTTP/2 client's bytes stand between frames, so that the head
//! timeout can time every request head of the connection, not only its
//! first: a head is a `HEADERS` frame and the `CONTINUATION` frames after
//! it, up to the one flagged `END_HEADERS` (RFC 9113 §4.3), and a client
//! could otherwise drip one for as long as its connection lives. hyper
//! shows a request only once its head is whole, so the frames are followed
//! here, as the bytes are read. Pure: no clock, no I/O.

/// The client connection preface (RFC 9113 §3.4), before the first frame.
const PREFACE_LEN: u32 = 24;
/// A frame header: length (24 bits), type, flags, stream (RFC 9113 §4.1).
const FRAME_HEADER_LEN: usize = 9;
/// Frame type `HEADERS`.
const HEADERS: u8 = 0x1;
/// Frame type `CONTINUATION`.
const CONTINUATION: u8 = 0x9;
/// Flag `END_HEADERS` of `HEADERS` and `CONTINUATION`.
const END_HEADERS: u8 = 0x4;

/// Follows the frames of a client's byte stream.
#[derive(Debug, Clone)]
pub struct FrameWatch {
    /// Bytes of the preface still to come.
    preface_left: u32,
    /// The current frame header, as far as it has arrived.
    header: [u8; FRAME_HEADER_LEN],
    /// How many bytes of `header` have arrived (all of it: the frame's
    /// payload is being read).
    have: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: u32,
    /// A header block is open: a `HEADERS` frame came without `END_HEADERS`
    /// and the `CONTINUATION` that ends it has not been read whole.
    in_block: bool,
    /// The first byte of the frame that may begin a head (the current
    /// frame, outside a block) came in the bytes being fed now.
    began_now: bool,
}

/// Where the client's bytes stand after one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// No request head is under way.
    None,
    /// A head is under way that began in these bytes (another may have
    /// ended in them: its clock is not this one's).
    Began,
    /// The head under way began in earlier bytes.
    Continues,
}

impl Default for FrameWatch {
    fn default() -> Self {
        FrameWatch {
            preface_left: PREFACE_LEN,
            header: [0; FRAME_HEADER_LEN],
            have: 0,
            payload_left: 0,
            in_block: false,
            began_now: false,
        }
    }
}

impl FrameWatch {
    /// Reads `bytes`, the next the client sent, and says whether a request
    /// head is under way after them (begun and not yet whole), and since when.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Head {
        self.began_now = false;
        if self.preface_left > 0 {
            let n = bytes.len().min(self.preface_left as usize);
            self.preface_left -= n as u32;
            bytes = bytes.get(n..).unwrap_or_default();
        }
        while !bytes.is_empty() {
            if self.have < FRAME_HEADER_LEN {
                if self.have == 0 && !self.in_block {
                    self.began_now = true;
                }
                let n = bytes.len().min(FRAME_HEADER_LEN - self.have);
                let (head, rest) = bytes.split_at(n);
                if let Some(slot) = self.header.get_mut(self.have..self.have + n) {
                    slot.copy_from_slice(head);
                }
                self.have += n;
                bytes = rest;
                if self.have == FRAME_HEADER_LEN {
                    let [a, b, c, ..] = self.header;
                    self.payload_left = u32::from_be_bytes([0, a, b, c]);
                    if self.payload_left == 0 {
                        self.frame_read();
                    }
                }
                continue;
            }
            let n = bytes.len().min(self.payload_left as usize);
            self.payload_left -= n as u32;
            bytes = bytes.get(n..).unwrap_or_default();
            if self.payload_left == 0 {
                self.frame_read();
            }
        }
        match (self.under_way(), self.began_now) {
            (false, _) => Head::None,
            (true, true) => Head::Began,
            (true, false) => Head::Continues,
        }
    }

    /// The current frame has been read whole: the next begins.
    fn frame_read(&mut self) {
        let [.., kind, flags, _, _, _, _] = self.header;
        if kind == HEADERS || kind == CONTINUATION {
            self.in_block = flags & END_HEADERS == 0;
        }
        self.have = 0;
    }

    /// Whether a head is under way: a block is open, a `HEADERS` or
    /// `CONTINUATION` frame is half read, or a frame header is half read
    /// and its type has not come yet (it may be a head's).
    pub fn under_way(&self) -> bool {
        if self.in_block {
            return true;
        }
        match self.have {
            0 => false,
            1..=3 => true,
            _ => {
                let [.., kind, _, _, _, _, _] = self.header;
                kind == HEADERS || kind == CONTINUATION
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.push(kind);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn settings() -> Vec<u8> {
        frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100])
    }

    #[test]
    fn a_whole_head_in_one_read_leaves_nothing_under_way() {
        let mut w = FrameWatch::default();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(settings());
        bytes.extend(frame(HEADERS, END_HEADERS | 0x1, 1, &[0x82, 0x87, 0x84]));
        assert_eq!(w.feed(&bytes), Head::None);
    }

    #[test]
    fn a_head_is_under_way_from_its_first_frame_byte_to_the_end_of_the_frame_ending_it() {
        let mut w = FrameWatch::default();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(settings());
        assert_eq!(w.feed(&bytes), Head::None);
        let headers = frame(HEADERS, 0x1, 3, &[0x82, 0x87]);
        let continuation = frame(CONTINUATION, 0, 3, &[0x84]);
        let last = frame(CONTINUATION, END_HEADERS, 3, &[0x84]);
        let mut all = headers.clone();
        all.extend(&continuation);
        all.extend(&last);
        // Byte by byte: under way from the first byte until the last one.
        let mut w2 = w.clone();
        for (i, b) in all.iter().enumerate() {
            let expected = match i {
                0 => Head::Began,
                i if i + 1 < all.len() => Head::Continues,
                _ => Head::None,
            };
            assert_eq!(w2.feed(&[*b]), expected, "after byte {i}");
        }
        // Frame by frame.
        assert_eq!(w.feed(&headers), Head::Began);
        assert_eq!(w.feed(&continuation), Head::Continues);
        assert_eq!(w.feed(&last), Head::None);
    }

    #[test]
    fn other_frames_are_not_heads_once_their_type_has_come() {
        let mut w = FrameWatch::default();
        assert_eq!(w.feed(PREFACE), Head::None);
        let data = frame(0x0, 0, 1, b"a body that drips");
        assert_eq!(w.feed(&data[..2]), Head::Began, "its type has not come yet");
        assert_eq!(w.feed(&data[2..5]), Head::None);
        assert_eq!(w.feed(&data[5..]), Head::None);
        let ping = frame(0x6, 0, 0, &[0; 8]);
        assert_eq!(w.feed(&ping[..6]), Head::None);
        assert_eq!(w.feed(&ping[6..]), Head::None);
    }

    #[test]
    fn a_headers_frame_half_read_is_a_head_under_way_even_with_end_headers() {
        let mut w = FrameWatch::default();
        w.feed(PREFACE);
        let headers = frame(HEADERS, END_HEADERS, 1, &[0x82, 0x87, 0x84, 0x41]);
        assert_eq!(w.feed(&headers[..11]), Head::Began);
        assert_eq!(w.feed(&headers[11..]), Head::None);
    }

    #[test]
    fn a_preface_split_across_reads_is_skipped() {
        let mut w = FrameWatch::default();
        assert_eq!(w.feed(&PREFACE[..10]), Head::None);
        let mut rest = PREFACE[10..].to_vec();
        rest.extend(frame(HEADERS, 0, 1, &[0x82]));
        assert_eq!(w.feed(&rest), Head::Began);
    }

    #[test]
    fn an_empty_frame_ends_a_block() {
        let mut w = FrameWatch::default();
        w.feed(PREFACE);
        assert_eq!(w.feed(&frame(HEADERS, 0, 1, &[])), Head::Began);
        assert_eq!(
            w.feed(&frame(CONTINUATION, END_HEADERS, 1, &[])),
            Head::None
        );
    }

    #[test]
    fn a_head_that_begins_in_the_read_that_ends_another_is_a_new_head() {
        let mut w = FrameWatch::default();
        w.feed(PREFACE);
        let first = frame(HEADERS, END_HEADERS, 1, &[0x82, 0x87, 0x84]);
        let second = frame(HEADERS, END_HEADERS, 3, &[0x82, 0x87, 0x84]);
        assert_eq!(w.feed(&first[..5]), Head::Began);
        let mut read = first[5..].to_vec();
        read.extend_from_slice(&second[..5]);
        assert_eq!(
            w.feed(&read),
            Head::Began,
            "the second head's clock starts now"
        );
        assert_eq!(w.feed(&second[5..7]), Head::Continues);
        assert_eq!(w.feed(&second[7..]), Head::None);
    }
}
