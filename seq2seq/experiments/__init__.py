"""Small experiments that test claims of the seeds (/work/shared/seeds) with our own modules.

gradient_flow    ‖∂h_T/∂h_t‖ against the distance T−t for RNN (tanh), LSTM and GRU: the product of
                 Jacobians ∂h_i/∂h_{i−1} vanishes, least for the gated cells (seeds 000, 001, 004).
long_dependency  remember the first symbol across a gap of G noise steps, with full or truncated
                 BPTT: the plain RNN fails first as G grows; with truncation k < G + 2 nothing can
                 be learnt (seed 004's truncated BPTT cuts exactly these long paths).
length_curve     BLEU and exact match against source length for the fixed-vector decoder and the
                 attention decoder (seed 002 §8.5.2, Fig. 8-21 vs 8-22): one summary vector loses
                 long sentences; attention over all encoder states, inside and past the training lengths.

Run each with `python -m seq2seq.experiments.<name> --help`.
"""
