//! Neuron-specific pieces: what neuronx-cc is known to accept, and the driver for it.
