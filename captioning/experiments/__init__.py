"""Experiments that test claims about captioning models with our own modules.

image_input  Show and Tell feeds the image once, as the first input, against the variant that feeds
             it at every step too (Vinyals et al. 2015, §3), on the synthetic shapes set.

Run with `python -m captioning.experiments.<name> --help`.
"""
