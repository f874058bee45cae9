{
  "targets": [
    {
      "target_name": "tfjs_checkpoint",
      "conditions": [
        [
          "OS=='win'",
          { "type": "none" },
          {
            "sources": [
              "native/addon.cc",
              "native/atomic_file.cc",
              "native/commit_binding.cc",
              "native/commit_plan.cc",
              "native/commit_queue.cc",
              "native/crc32c.cc",
              "native/crc_follower.cc",
              "native/crc_views.cc",
              "native/failure.cc",
              "native/js_convert.cc",
              "native/mapped_reader.cc",
              "native/split_reader.cc",
              "native/tensor_reader.cc",
              "native/tensor_writer.cc"
            ]
          }
        ]
      ],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-fvisibility=hidden"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden"],
      "cflags_cc!": ["-std=gnu++17", "-std=gnu++20", "-fno-exceptions"],
      "xcode_settings": {
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "GCC_SYMBOLS_PRIVATE_EXTERN": "YES",
        "GCC_TREAT_WARNINGS_AS_ERRORS": "YES",
        "MACOSX_DEPLOYMENT_TARGET": "11.0",
        "OTHER_CPLUSPLUSFLAGS": ["-Wall", "-Wextra"]
      }
    }
  ]
}
