//! Customer memory on anyone's behalf: the one implementation of every
//! memory request, whether it comes from a client (the client socket) or a
//! brain (its kernel channel). Only the [`Requester`] differs, and with it
//! what the policy allows: a client owns `client:<name>/…`, a brain owns
//! `brain:<name>/…` and may also use the namespaces its manifest declares;
//! grants come from `[[memory.namespaces]]` in the config. Every request is
//! decided, recorded as intent, forwarded to the memory service and recorded
//! as outcome, through [`Appliance::memory_op`] or
//! [`Appliance::memory_scoped`].

use crate::appliance::{Appliance, Requester};
use sios_ipc::budget::encoded_size;
use sios_ipc::memory::{
    self, CompactReport, EraseReport, ExportPage, ExportRequest, ExportScope, ImportReport,
    ImportRequest, Item, ListPage, ListRequest, MemoryError, PutRequest, PutResponse,
    SearchRequest, SearchResponse,
};
use sios_ipc::transport;
use sios_policy::Action;

/// The scope a request about one data subject is decided and recorded on:
/// every namespace, for one person. The subject's id is in neither the
/// decision nor the record (the log outlives an erasure; the records carry
/// the subject's pseudonym instead), so a policy or a namespace grant for
/// data-subject requests names this scope, not a person.
pub const SUBJECT_SCOPE: &str = "subject/*";

impl Appliance {
    /// Stores (or replaces) one item.
    pub async fn memory_put(
        &self,
        requester: &Requester,
        request: PutRequest,
    ) -> Result<PutResponse, MemoryError> {
        let namespace = request.namespace.clone();
        let holds = encoded_size(&request) as usize;
        self.memory_op(
            requester,
            Action::MemoryWrite,
            &namespace,
            holds,
            |c, ctx| async move { c.put(ctx, request).await },
        )
        .await
    }

    /// Reads one item.
    pub async fn memory_get(
        &self,
        requester: &Requester,
        namespace: String,
        key: String,
    ) -> Result<Item, MemoryError> {
        let ns = namespace.clone();
        let holds = memory::MAX_ITEM_BYTES;
        self.memory_op(
            requester,
            Action::MemoryRead,
            &ns,
            holds,
            |c, ctx| async move { c.get(ctx, namespace, key).await },
        )
        .await
    }

    /// One page of a namespace, in key order.
    pub async fn memory_list(
        &self,
        requester: &Requester,
        request: ListRequest,
    ) -> Result<ListPage, MemoryError> {
        let ns = request.namespace.clone();
        let holds = memory::MAX_PAGE_BYTES;
        self.memory_op(
            requester,
            Action::MemoryRead,
            &ns,
            holds,
            |c, ctx| async move { c.list(ctx, request).await },
        )
        .await
    }

    /// Deletes one item (for good: no later read returns it).
    pub async fn memory_delete(
        &self,
        requester: &Requester,
        namespace: String,
        key: String,
    ) -> Result<(), MemoryError> {
        let ns = namespace.clone();
        self.memory_op(
            requester,
            Action::MemoryWrite,
            &ns,
            0,
            |c, ctx| async move { c.delete(ctx, namespace, key).await },
        )
        .await
    }

    /// Nearest neighbours of an embedding. Every namespace searched must be
    /// readable by the requester; searching them all (no namespaces named) is
    /// decided on the `*` namespace, which nobody owns: an operator's business.
    pub async fn memory_search(
        &self,
        requester: &Requester,
        request: SearchRequest,
    ) -> Result<SearchResponse, MemoryError> {
        let scope = request
            .namespaces
            .clone()
            .unwrap_or_else(|| vec!["*".into()]);
        let checked: Vec<String> = scope.iter().filter(|n| *n != "*").cloned().collect();
        self.memory_allowed_everywhere(requester, Action::MemoryRead, "search", &checked)
            .await?;
        let first = scope.first().cloned().unwrap_or_else(|| "*".into());
        self.memory_scoped(
            requester,
            Action::MemoryRead,
            &first,
            format!("memory:search:{}", scope.join(",")),
            None,
            memory::MAX_SEARCH_ANSWER_BYTES,
            |c, ctx| async move { c.search(ctx, request).await },
        )
        .await
    }

    /// Everything about one data subject, in every namespace, destroyed with
    /// the subject's key; then the audit log's linking key for the subject,
    /// so that the records of this and every earlier request about them
    /// (which carry only its pseudonym) link to nobody from now on.
    /// Erasing twice is harmless, so a failure here is finished by a retry.
    pub async fn memory_erase_subject(
        &self,
        requester: &Requester,
        subject: String,
    ) -> Result<EraseReport, MemoryError> {
        memory::validate_subject(&subject)?;
        let audit = self.audit_client().map_err(|reason| {
            MemoryError::Unavailable(format!("erasure is recorded and finished by it: {reason}"))
        })?;
        let link = crate::operations::data_subject_link(&subject);
        let about = subject.clone();
        self.memory_scoped(
            requester,
            Action::MemoryErase,
            SUBJECT_SCOPE,
            format!("memory:{SUBJECT_SCOPE}"),
            Some(&about),
            0,
            |c, ctx| async move {
                let report = match c.erase_subject(ctx, subject).await? {
                    Ok(report) => report,
                    Err(refused) => return Ok(Err(refused)),
                };
                let ctx = transport::context_with_timeout(crate::operations::SERVICE_TIMEOUT);
                Ok(
                    match crate::operations::audit_answer(audit.erase_subject_key(ctx, link).await)
                    {
                        Ok(existed) => Ok(EraseReport {
                            audit_link_removed: existed,
                            ..report
                        }),
                        Err(reason) => Err(MemoryError::EraseUnfinished(format!(
                            "the subject's memory is erased, but the audit log may still hold \
                             its linking key ({reason})"
                        ))),
                    },
                )
            },
        )
        .await
    }

    /// One page of an export of a namespace or a subject.
    pub async fn memory_export(
        &self,
        requester: &Requester,
        request: ExportRequest,
    ) -> Result<ExportPage, MemoryError> {
        let (scope, subject) = match &request.scope {
            ExportScope::Namespace(ns) => (ns.clone(), None),
            ExportScope::Subject(subject) => {
                // Refused before it is recorded: an invalid id would name a
                // linking key that no erasure (which validates) could remove.
                memory::validate_subject(subject)?;
                (SUBJECT_SCOPE.to_owned(), Some(subject.clone()))
            }
        };
        self.memory_scoped(
            requester,
            Action::MemoryExport,
            &scope,
            format!("memory:{scope}"),
            subject.as_deref(),
            memory::MAX_PAGE_BYTES,
            |c, ctx| async move { c.export(ctx, request).await },
        )
        .await
    }

    /// Restores exported items; every namespace they name must be writable.
    pub async fn memory_import(
        &self,
        requester: &Requester,
        request: ImportRequest,
    ) -> Result<ImportReport, MemoryError> {
        let mut namespaces: Vec<String> =
            request.items.iter().map(|i| i.namespace.clone()).collect();
        namespaces.sort();
        namespaces.dedup();
        self.memory_allowed_everywhere(requester, Action::MemoryWrite, "import", &namespaces)
            .await?;
        let first = namespaces.first().cloned().unwrap_or_else(|| "*".into());
        let holds = encoded_size(&request) as usize;
        self.memory_scoped(
            requester,
            Action::MemoryWrite,
            &first,
            format!("memory:import:{}", namespaces.join(",")),
            None,
            holds,
            |c, ctx| async move { c.import(ctx, request).await },
        )
        .await
    }

    /// Rewrites the memory service's files so nothing deleted lingers.
    pub async fn memory_compact(
        &self,
        requester: &Requester,
    ) -> Result<CompactReport, MemoryError> {
        self.memory_scoped(
            requester,
            Action::MemoryErase,
            "*",
            "memory:*".into(),
            None,
            0,
            |c, ctx| async move { c.compact(ctx).await },
        )
        .await
    }
}
