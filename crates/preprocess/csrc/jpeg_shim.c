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

/* The frame header: size, and whether the pixels are 4-component (CMYK or YCCK). */
int petal_jpeg_header(const unsigned char *buf, unsigned long len, unsigned int *width, unsigned int *height,
                      int *cmyk, char *msg) {
    struct jpeg_decompress_struct cinfo;
    struct petal_error err;
    err.msg = msg;
    msg[0] = '\0';
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
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
    err.msg = msg;
    msg[0] = '\0';
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    open_image(&cinfo, &err, buf, len);
    cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    cinfo.dct_method = JDCT_ISLOW;
    cinfo.do_fancy_upsampling = TRUE;
    jpeg_start_decompress(&cinfo);
    size_t stride = (size_t)cinfo.output_width * (size_t)cinfo.output_components;
    if (stride * (size_t)cinfo.output_height != out_len) {
        snprintf(msg, PETAL_MSG_LEN, "decoded size %ux%u with %d components does not match the header",
                 cinfo.output_width, cinfo.output_height, cinfo.output_components);
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
