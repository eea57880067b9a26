"""Training losses more than one task shares (torch is imported when a loss is computed, not before)."""

from __future__ import annotations


def own_loss(model, batch: dict):
    """The loss a transformers model computes from the labels in its batch (classification, next token)."""
    return model(**batch).loss


def soft_label_terms(student, teacher, batch: dict, temperature: float, hidden: bool) -> tuple:
    """Hinton's soft labels: KL divergence between student and teacher logits at `temperature`, scaled by
    T^2 and averaged over the real (unmasked) positions; the task's loss is the student's own."""
    import torch
    import torch.nn.functional as F

    out = student(**batch, output_hidden_states=hidden)
    with torch.no_grad():
        ref = teacher(**batch, output_hidden_states=hidden)
    T = temperature
    kl = (
        F.kl_div(
            F.log_softmax(out.logits / T, -1), F.log_softmax(ref.logits / T, -1), log_target=True, reduction="none"
        )
        .sum(-1)
        .mul(T * T)
    )
    mask = batch.get("attention_mask")
    weights = mask.to(kl.dtype) if mask is not None and kl.dim() == 2 else torch.ones_like(kl)
    return out, ref, (kl * weights).sum() / weights.sum(), out.loss
