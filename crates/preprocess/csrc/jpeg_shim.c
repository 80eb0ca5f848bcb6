/*
 * The two calls `crate::jpeg` makes into libjpeg (6.2 ABI), with libjpeg's error handling kept in C:
 * libjpeg reports a fatal error by calling `error_exit`, which must not return; here it formats the
 * message and `longjmp`s back to the entry point, so no Rust frame is ever unwound or skipped.
 *
 * Settings are Pillow's (its JpegDecode.c): integer slow IDCT (JDCT_ISLOW) and fancy upsampling,
 * libjpeg's defaults, set explicitly here. Warnings (corrupt-data recoveries such as "extraneous
 * bytes before marker") do not fail the decode and print nothing, as in Pillow.
 */
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>

#include "jpeglib.h"

/* libjpeg-turbo's partial-decoding calls (since 1.5; not in the vendored 6.2 headers). */
EXTERN(void) jpeg_crop_scanline(j_decompress_ptr cinfo, JDIMENSION *xoffset, JDIMENSION *width);
EXTERN(JDIMENSION) jpeg_skip_scanlines(j_decompress_ptr cinfo, JDIMENSION num_lines);

/* Keep in sync with `MSG_LEN` in src/jpeg.rs. */
#define PETAL_MSG_LEN 200

struct petal_error {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char *msg; /* PETAL_MSG_LEN bytes, owned by the caller */
};

static void petal_error_exit(j_common_ptr cinfo) {
    struct petal_error *err = (struct petal_error *)cinfo->err;
    char buf[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, buf);
    snprintf(err->msg, PETAL_MSG_LEN, "%s", buf);
    longjmp(err->jump, 1);
}

static void petal_output_message(j_common_ptr cinfo) { (void)cinfo; }

/* The start of every entry point: libjpeg's fatal errors leave their message in `msg` and return
 * -1 from it. (A macro: `setjmp` must run in the frame it returns to.) */
#define PETAL_ENTER(cinfo, err, msg)           \
    (err).msg = (msg);                         \
    (msg)[0] = '\0';                           \
    if (setjmp((err).jump)) {                  \
        jpeg_destroy_decompress(&(cinfo));     \
        return -1;                             \
    }

/* Creates the decompressor and reads the header; a failure longjmps to the caller's `setjmp`. */
static void open_image(struct jpeg_decompress_struct *cinfo, struct petal_error *err, const unsigned char *buf,
                      unsigned long len) {
    cinfo->err = jpeg_std_error(&err->pub);
    err->pub.error_exit = petal_error_exit;
    err->pub.output_message = petal_output_message;
    jpeg_create_decompress(cinfo);
    jpeg_mem_src(cinfo, buf, len);
    jpeg_read_header(cinfo, TRUE);
}

/* Starts decompressing into `space` with Pillow's settings; returns the bytes of an output row, or
 * 0 (with the message in `msg`) when rows of that size do not fill `out_len` bytes exactly. */
static size_t start(struct jpeg_decompress_struct *cinfo, J_COLOR_SPACE space, size_t out_len, char *msg) {
    cinfo->out_color_space = space;
    cinfo->dct_method = JDCT_ISLOW;
    cinfo->do_fancy_upsampling = TRUE;
    jpeg_start_decompress(cinfo);
    size_t stride = (size_t)cinfo->output_width * (size_t)cinfo->output_components;
    if (stride * (size_t)cinfo->output_height != out_len) {
        snprintf(msg, PETAL_MSG_LEN, "decoded size %ux%u with %d components does not match the header", cinfo->output_width,
                 cinfo->output_height, cinfo->output_components);
        return 0;
    }
    return stride;
}

/* The frame header: size, and whether the pixels are 4-component (CMYK or YCCK). */
int petal_jpeg_header(const unsigned char *buf, unsigned long len, unsigned int *width, unsigned int *height,
                      int *cmyk, char *msg) {
    struct jpeg_decompress_struct cinfo;
    struct petal_error err;
    PETAL_ENTER(cinfo, err, msg);
    open_image(&cinfo, &err, buf, len);
    *width = cinfo.image_width;
    *height = cinfo.image_height;
    *cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    jpeg_destroy_decompress(&cinfo);
    return 0;
}

/* Decodes into `out` (`out_len` bytes): RGB, 3 bytes a pixel, or, when `cmyk`, the stored CMYK
 * samples, 4 bytes a pixel. The output size must equal width * height * components. */
int petal_jpeg_decode(const unsigned char *buf, unsigned long len, int cmyk, unsigned char *out, size_t out_len,
                      char *msg) {
    struct jpeg_decompress_struct cinfo;
    struct petal_error err;
    PETAL_ENTER(cinfo, err, msg);
    open_image(&cinfo, &err, buf, len);
    size_t stride = start(&cinfo, cmyk ? JCS_CMYK : JCS_RGB, out_len, msg);
    if (stride == 0) {
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = out + (size_t)cinfo.output_scanline * stride;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return 0;
}

/* Decodes at least columns [x0, x0 + w) of rows [y0, y0 + h) of a 3- or 1-component, sequential
 * JPEG as RGB into `out`, a buffer of the whole image (`out_len` bytes, rows of width * 3 bytes),
 * each decoded pixel at its own place; other bytes of `out` are left as they were. libjpeg-turbo
 * widens the columns to iMCU boundaries, and its fancy upsampling treats the widened edges as
 * image edges, so callers ask for a margin around the pixels they read. The rows after the
 * window are skipped, which still entropy-decodes them (all but the last, which is read), so
 * corrupt data anywhere fails the call as a whole decode would.
 * Returns 1, without decoding, for a progressive or 4-component JPEG (decode it whole). */
int petal_jpeg_decode_rect(const unsigned char *buf, unsigned long len, unsigned int x0, unsigned int y0, unsigned int w,
                           unsigned int h, unsigned char *out, size_t out_len, char *msg) {
    struct jpeg_decompress_struct cinfo;
    struct petal_error err;
    PETAL_ENTER(cinfo, err, msg);
    open_image(&cinfo, &err, buf, len);
    if (cinfo.progressive_mode || cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&cinfo);
        return 1;
    }
    size_t stride = start(&cinfo, JCS_RGB, out_len, msg);
    if (stride == 0) {
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    if (w == 0 || h == 0 || x0 > cinfo.output_width - w || y0 > cinfo.output_height - h) {
        snprintf(msg, PETAL_MSG_LEN, "window %ux%u at (%u, %u) is outside the %ux%u image", w, h, x0, y0, cinfo.output_width,
                 cinfo.output_height);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    JDIMENSION xoff = x0, cw = w;
    if (cw < cinfo.output_width) {
        jpeg_crop_scanline(&cinfo, &xoff, &cw);
    }
    if (y0 > 0) {
        jpeg_skip_scanlines(&cinfo, y0);
    }
    JDIMENSION last = cinfo.output_height - 1;
    while (cinfo.output_scanline < y0 + h) {
        JSAMPROW row = out + (size_t)cinfo.output_scanline * stride + (size_t)xoff * 3;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    if (cinfo.output_scanline < last) {
        jpeg_skip_scanlines(&cinfo, last - cinfo.output_scanline);
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = out + (size_t)cinfo.output_scanline * stride + (size_t)xoff * 3;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return 0;
}
