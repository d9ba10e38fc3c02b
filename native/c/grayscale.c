/*
 * grayscale.c - the `grayscale` algorithm's pixel kernel.
 *
 * Stage k (0-based) of n converts the rows [k*h/n, (k+1)*h/n) of an RGB8
 * image (3 bytes a pixel, rows top to bottom, no padding) into 8-bit luma,
 * ITU-R BT.601 in integers:
 *
 *     Y = (299 R + 587 G + 114 B + 500) / 1000   (rounded to nearest)
 *
 * The output is the whole width * height luma buffer; a stage writes only its
 * band. The cancel flag is read and the progress stored before every row.
 */
#include "stage.h"

int algo_grayscale_stage(const struct algo_stage *call) {
    const struct algo_grayscale_input *in;
    uint8_t *gray;
    uint64_t first, end, row, width;
    int rc;

    if (call == NULL) {
        return ALGO_EINVAL;
    }
    in = call->input;
    rc = algo_check(call, sizeof *in, call->output_size);
    if (rc != ALGO_OK) {
        return rc;
    }
    width = in->width;
    if (in->rgb == NULL || (uint64_t)call->output_size != width * in->height) {
        return ALGO_EINVAL;
    }
    gray = call->output;
    first = (uint64_t)call->stage * in->height / call->stages;
    end = ((uint64_t)call->stage + 1u) * in->height / call->stages;

    for (row = first; row < end; row++) {
        const uint8_t *src = in->rgb + row * width * 3u;
        uint8_t *dst = gray + row * width;
        uint64_t x;
        if (algo_cancelled(call)) {
            return ALGO_INTERRUPTED;
        }
        algo_progress(call, row - first, end - first);
        for (x = 0; x < width; x++) {
            uint32_t r = src[3 * x], g = src[3 * x + 1], b = src[3 * x + 2];
            dst[x] = (uint8_t)((299u * r + 587u * g + 114u * b + 500u) / 1000u);
        }
    }
    if (algo_cancelled(call)) {
        return ALGO_INTERRUPTED;
    }
    algo_progress(call, 1, 1);
    return ALGO_OK;
}
