/* placeholder replaced by the codec work */
typedef int qn_codec_unused_;
