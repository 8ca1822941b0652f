"""Analyses of a trained model as pure functions of (model, images): where swaps and morphs, the shift probe, layer and
unit views, attributions, and their rendering to pictures. Beside core.training: imports core.model and core.data,
never core.training, core.runs or the app.
"""
from __future__ import annotations

from core.analysis.running import (
    evaluating, as_batch, cat_encodings, psnr, class_probabilities, classify, mse, mse_of, activation_bytes,
    batch_size_for, BATCH_MEMORY_BYTES,
)
from core.analysis.swaps import (
    SwapResult, WhereMorph, swap_findings, swap_where, swap_matrix, reconstruct, no_where_recon, morph_where,
)
from core.analysis.probe import ShiftStage, shift_image, shift_probe, shift_curves, along_axis, shift_findings
from core.analysis.lens import (
    PoolingLens, SwitchAgreement, window_ties, pooling_lens, switch_agreement, tie_share, paired_lenses,
    busiest_channel, image_lens,
)
from core.analysis.units import StageView, UnitView, layer_views, unit_view, unit_decodings, channel_peaks, top_images
from core.analysis.attribution import (
    METHODS, METHOD_LABELS, NEARLY_SAME, LogitsModel, Attribution, attribute, attribute_all, map_correlation,
    TargetContrast, target_contrast, TopUnit, top_unit,
)
from core.analysis.render import (
    Mosaic, mosaic, mosaic_columns, where_colors, where_mosaic, where_legend, display_image,
    diverging_rgb, Tile, difference_tile, stage_difference, recon_tiles, swap_tiles, panel_png, print_png, swap_grid,
    sequential_rgb, tile_rgb, crisp_pixels, side_by_side, unit_tiles, tile_targets, padded_tiles, TIE_RGB,
)
from core.analysis.keys import where_key_png, outline_tile
from core.analysis.lens_picture import LensPictures, lens_pictures, picture_png
from core.analysis.compare import (
    ModelFigures, CrossedWhere, model_figures, cross_refusal, cross_where, compare_findings, probe_at, shared_scale,
    probe_findings, ModelTraits, Difference, Partner, model_traits, model_differences, differences_sentence,
    earlier_steps, default_partner,
)
from core.analysis.formation import StepPictures, step_pictures, switches_settled, spread_evenly
from core.analysis.domain import DomainRank, domain_scores, domain_rank, UNLIKE_PERCENTILE, RECON_SCORE, ENERGY_SCORE
from core.analysis.networks import (
    PROJECTION_NOTE, NO_HIDDEN_NOTE, is_network, projects, decoder_refusal, window_refusal, probe_refusal, projection_tile,
    picture_tile, network_swap_tiles, network_unit_tiles, grey_centred,
)
from core.analysis.viewable import VIEWABLE_CHANNELS, MAX_VIEWABLE_SIZE, MAX_IMAGE_ACTIVATION_BYTES, check_viewable

__all__ = [
    "evaluating", "as_batch", "cat_encodings", "psnr", "class_probabilities", "classify", "mse", "mse_of",
    "activation_bytes", "batch_size_for", "BATCH_MEMORY_BYTES", "SwapResult", "WhereMorph", "swap_findings", "swap_where",
    "swap_matrix", "reconstruct", "no_where_recon", "morph_where", "ShiftStage", "shift_image", "shift_probe",
    "shift_curves", "along_axis", "shift_findings", "StageView", "UnitView", "layer_views", "unit_view",
    "unit_decodings", "channel_peaks", "top_images", "METHODS", "METHOD_LABELS", "LogitsModel", "Attribution",
    "attribute", "attribute_all", "NEARLY_SAME", "map_correlation", "TargetContrast", "target_contrast", "TopUnit",
    "top_unit",
    "Mosaic", "mosaic", "mosaic_columns", "where_colors", "where_mosaic",
    "where_legend", "display_image", "diverging_rgb", "Tile", "difference_tile", "stage_difference",
    "recon_tiles", "swap_tiles", "panel_png", "print_png", "swap_grid", "sequential_rgb", "tile_rgb", "crisp_pixels",
    "side_by_side", "unit_tiles", "tile_targets", "padded_tiles", "where_key_png", "outline_tile", "TIE_RGB", "VIEWABLE_CHANNELS", "MAX_VIEWABLE_SIZE",
    "MAX_IMAGE_ACTIVATION_BYTES", "check_viewable", "ModelFigures", "CrossedWhere", "model_figures", "cross_refusal",
    "cross_where", "compare_findings", "probe_at", "shared_scale", "probe_findings", "ModelTraits", "Difference",
    "Partner", "model_traits", "model_differences", "differences_sentence", "earlier_steps", "default_partner",
    "StepPictures", "step_pictures",
    "PoolingLens", "SwitchAgreement", "window_ties", "pooling_lens", "switch_agreement", "tie_share",
    "paired_lenses", "busiest_channel", "LensPictures", "lens_pictures", "picture_png", "spread_evenly", "switches_settled", "image_lens",
    "DomainRank", "domain_scores", "domain_rank", "UNLIKE_PERCENTILE", "RECON_SCORE", "ENERGY_SCORE",
    "PROJECTION_NOTE", "NO_HIDDEN_NOTE", "is_network", "projects", "decoder_refusal", "window_refusal", "probe_refusal",
    "projection_tile", "picture_tile", "network_swap_tiles", "network_unit_tiles", "grey_centred",
]
