//! The most bytes the kernel's answer to a request may take, as the kernel
//! can tell before it serves the request: each request takes that much of
//! its caller's byte budget from the moment it is admitted (see
//! `sios_ipc::budget`), so that many small requests cannot add up to
//! gigabytes of answers before any of them is counted. A memory read of a
//! few dozen bytes may be answered with a 1.1 MiB item; a brain's answer is
//! bounded by the outputs its manifest declares, at the request's batch.
//! Requests whose answers cannot be sized beforehand count 0 here; their
//! answers are counted once made, if the budget has room.

use crate::appliance::Appliance;
use sios_ipc::memory::{MAX_ITEM_BYTES, MAX_PAGE_BYTES, MAX_SEARCH_ANSWER_BYTES};
use sios_ipc::{BrainSupportRequest, InferRequest, KernelRequest};

impl Appliance {
    /// For a client's request (the client socket).
    pub(crate) fn client_answer_bound(&self, request: &KernelRequest) -> u64 {
        match request {
            KernelRequest::MemoryGet { .. } => MAX_ITEM_BYTES as u64,
            KernelRequest::MemoryList { .. } | KernelRequest::MemoryExport { .. } => {
                MAX_PAGE_BYTES as u64
            }
            KernelRequest::MemorySearch { .. } => MAX_SEARCH_ANSWER_BYTES as u64,
            KernelRequest::Invoke { brain, request } => self.brain_answer_bound(brain, request),
            _ => 0,
        }
    }

    /// For a brain's request (its channel to the kernel).
    pub(crate) fn brain_channel_answer_bound(&self, request: &BrainSupportRequest) -> u64 {
        match request {
            BrainSupportRequest::MemoryGet { .. } => MAX_ITEM_BYTES as u64,
            BrainSupportRequest::MemoryList { .. } => MAX_PAGE_BYTES as u64,
            BrainSupportRequest::MemorySearch { .. } => MAX_SEARCH_ANSWER_BYTES as u64,
            BrainSupportRequest::CallBrain { callee, request } => {
                self.brain_answer_bound(callee, request)
            }
            _ => 0,
        }
    }

    /// What `brain` may answer to `request`; never more than one frame. An
    /// unknown brain answers with a refusal: 0.
    fn brain_answer_bound(&self, brain: &str, request: &InferRequest) -> u64 {
        self.facts_of(brain).map_or(0, |facts| {
            facts
                .answer_bytes_bound(&request.inputs)
                .min(self.config().limits.max_frame_bytes as u64)
        })
    }
}
