//! billhook-provisioning
