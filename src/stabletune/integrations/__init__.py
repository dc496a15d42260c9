"""Integrations with other training stacks: :mod:`stabletune.integrations.hf` (Hugging Face ``Trainer``) and
:mod:`stabletune.integrations.tensorboard` (TensorBoard scalars of a stabletune run). Each imports its optional
dependency only when used."""
